"""Codes for the verifier (MP5xx findings proved over every request, MP60x
results of user assertions). Graph findings (MP55x-MP59x) live in graph.py."""

from . import define

CODES = define(
    "verify",
    # ---- authorization
    ("MP501", "dead-allow-rule", "warning", "every request this allow rule matches is denied by a deny rule",
     "narrow or remove the deny rules named in the labels, or remove the allow rule"),
    ("MP502", "redundant-rule", "warning", "every request this rule matches is already matched by other rules of the same effect",
     "remove the rule, or change it so it adds something the others do not cover"),
    ("MP503", "allow-deny-overlap", "info", "a deny rule wins over part of what this allow rule matches",
     "if the overlap is intended nothing needs doing; otherwise narrow one of the rules"),
    ("MP504", "auth-rule-matches-nothing", "warning", "this authorization rule matches no request at all",
     "a named caller's identity is only visible over mTLS; check the sources, the destination's mtls and the patterns"),
    ("MP505", "path-never-normalized", "warning", "a path pattern is spelled in a way no normalized path is (`//`, a `.` or `..` segment, `%61`, `%2F`), so it never matches",
     "write the path as normalization leaves it (merge `/`, resolve `.` and `..`, decode unreserved escapes); rules only ever see normalized paths"),
    ("MP506", "ineffective-route-match", "info", "part of a route rule's match (one of its paths or methods) is taken by earlier rules for every request (Istio's IST0131)",
     "drop that path or method from the rule, or move the rule above the ones named in the labels; the rest of the rule still routes"),
    # ---- routing
    ("MP510", "unreachable-route-rule", "warning", "every request this route rule matches is taken by earlier rules (or it matches none)",
     "move the rule above the rules named in the labels, narrow those, or remove it"),
    ("MP511", "version-without-traffic", "warning", "a version receives no traffic under any request",
     "give it a non-zero weight on a reachable route rule, or remove it"),
    ("MP512", "route-denied-by-authorization", "warning", "every request this route rule takes is denied by authorization, for every caller",
     "allow the callers the route is meant for, or remove the route rule"),
    # ---- rate limits
    ("MP530", "dead-limit", "warning", "a rate limit (or a caller it names) never applies: no allowed request from that caller reaches the destination",
     "allow the calls the limit is meant for, or remove the limit (or the caller from it)"),
    ("MP531", "limit-shadowed-by-deny", "warning", "a rate limit never applies because deny rules refuse every request it would count",
     "narrow the deny rules named in the labels, or remove the limit"),
    ("MP532", "retries-eat-limit", "warning", "retries (and amplification before them) make one request count several times against a rate limit",
     "retry at one layer only, lower the attempts on this hop, or raise the limit by the factor in the message"),
    # ---- north-south: the internet, tokens, egress (docs/verify.md, "The internet as a caller")
    ("MP540", "admin-path-open-to-internet", "warning", "an administrative-looking path (an `admin`, `internal`, `debug` or `actuator` segment) is reachable from the internet without a token",
     "require a token on the rule that allows it (`allow internet with jwt ... -> ...`), narrow its paths, or stop the ingress forwarding that path"),
    ("MP541", "dead-internet-source", "warning", "an `internet` source no request from the ingresses can meet: none forwards a request with the rule's methods and paths as it arrives (after the ingress rewrite) with a token that passes its claims",
     "write the rule's paths as the service receives them (after the ingress rewrite), or forward those paths from an ingress"),
    ("MP542", "egress-allow-any", "warning", "with `egress allow_any`, workloads reach hosts no `external` declares, and no rule applies to those requests",
     "declare the hosts workloads need as `external` services and use `egress registry_only`"),
    ("MP543", "external-host-shadowed", "warning", "an external's host is claimed first by a mesh service's name or an earlier external's host, so the egress rules on this external never apply to it",
     "remove the overlapping host from one of the declarations, or write the rules on the declaration that takes the host"),
    ("MP544", "keyed-limit-shadowed", "warning", "a per-key rate limit never acts: a limit without a key on the same callers and destination lets their whole traffic through at a lower rate and burst than one key's bucket allows",
     "lower the per-key limit below the pair limit, raise the pair limit, or remove one of them"),
    # ---- the verifier itself
    ("MP507", "too-many-rules", "warning", "a destination has more authorization and route rules than the verifier's limit, so calls to it were not verified",
     "split the rules across services or patterns, or raise `max_rules_per_destination` under [verify] in meshc.toml"),
    ("MP508", "time-limit", "warning", "verification stopped at its time limit; what was not reached was not proved",
     "raise `max_seconds` under [verify] in meshc.toml, or verify fewer services at a time"),
    ("MP520", "not-proved", "warning", "the verifier could not decide the findings for a destination (unsupported pattern or solver timeout)",
     "simplify the regex named in the message, or raise --timeout-ms; nothing about this destination was proved"),
    # ---- assertions
    ("MP601", "assertion-refuted", "error", "an assertion does not hold: the witness request shows a counterexample",
     "change the policy so the witness request is decided as the assertion says, or fix the assertion"),
    ("MP602", "assertion-unknown", "warning", "an assertion could not be proved or refuted (solver timeout or unsupported pattern)",
     "raise --timeout-ms or simplify the patterns involved; the assertion was not proved"),
    ("MP603", "assertion-proved", "info", "an assertion holds for every request",
     "nothing to do; shown with --verbose"),
)
