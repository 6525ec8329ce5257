"""Codes for checks on the typed model (MP1xx names, MP2xx values,
MP3xx meaning, MP4xx unused things)."""

from . import define

CODES = define(
    "check",
    # ---- names
    ("MP101", "unknown-service", "error", "a name is used as a service but no service has that name",
     "declare the service with `service NAME { ... }`, or fix the spelling"),
    ("MP102", "unknown-version", "error", "a route sends traffic to a version its service does not declare",
     "declare it inside the service with `version NAME { label: \"value\" }`"),
    ("MP103", "duplicate-name", "error", "a service, version, route or mesh block is declared twice",
     "rename one of them or merge the two declarations"),
    ("MP104", "unknown-namespace", "warning", "a `namespace` source names a namespace no service lives in",
     "check the spelling; a namespace that has no services matches no caller"),
    ("MP105", "unknown-method", "error", "a method is not a standard HTTP method",
     "use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT or TRACE"),
    ("MP106", "unknown-retry-condition", "error", "a retry-on condition is not one meshc knows",
     "use 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, ..."),
    ("MP107", "missing-mesh", "warning", "no `mesh` block: defaults apply (strict mTLS, default deny)",
     "add `mesh NAME { trust_domain \"example.org\" }` to one file"),
    # ---- values
    ("MP201", "split-weights", "error", "a traffic split leaves out a weight, or its weights do not total 100%",
     "give every destination of a split a weight, and make the weights add up to exactly 100%"),
    ("MP202", "percent-range", "error", "a percentage is outside 0% to 100%",
     "use a value between 0% and 100%"),
    ("MP203", "non-positive-duration", "error", "a duration is zero, or a backoff cap is below its base",
     "use a positive duration such as `100ms`; `backoff B max M` needs M >= B"),
    ("MP204", "invalid-regex", "error", "a regular expression is not valid RE2 syntax",
     "Envoy and Istio use RE2: no backreferences or lookaround"),
    ("MP205", "invalid-identity", "error", "a trust domain, namespace or service account cannot form a SPIFFE ID",
     "trust domains are lower-case letters, digits, `.`, `-` and `_` (like `example.org`); namespaces and "
     "accounts are DNS labels: at most 63 lower-case letters, digits and `-`, starting and ending alphanumeric"),
    ("MP206", "invalid-port", "error", "a port number is outside 1 to 65535, or a port is declared twice",
     "use a port between 1 and 65535, once per service"),
    ("MP207", "invalid-status", "error", "an HTTP status code is not valid where it is used",
     "aborts and responses use 200-599; redirects use 301, 302, 303, 307 or 308"),
    ("MP208", "invalid-count", "error", "a count is out of range (zero retries, zero limits or bounds, or too large)",
     "use `retry off` for no retries; counts must be between 1 and 4294967295"),
    ("MP209", "invalid-path", "error", "a path pattern is malformed",
     "paths start with `/` and hold no `?` or `#`; `*` must be a whole segment and `**` may only end a "
     "pattern or stand between slashes"),
    ("MP210", "invalid-header", "error", "a header name is not a valid HTTP header name",
     "header names are tokens of letters, digits and `-` (RFC 9110), such as `x-user-id`"),
    ("MP211", "invalid-label", "error", "a pod label key or value is not valid in Kubernetes",
     "label names and values are at most 63 letters, digits, `-`, `_` and `.`, starting and ending "
     "alphanumeric; a key may have a DNS prefix such as `app.kubernetes.io/`"),
    ("MP212", "empty-service", "error", "a service declares no port",
     "add `port 8080 http` (or the port your service listens on)"),
    # ---- meaning
    ("MP301", "retry-exceeds-timeout", "error", "retries cannot fit in the timeout: (retries + 1) x per-try timeout exceeds it",
     "lower the attempts or the per-try timeout, or raise the timeout"),
    ("MP302", "non-idempotent-retry", "warning", "retries apply to POST or PATCH requests, which may not be safe to repeat",
     "limit the rule to idempotent methods, or add `non_idempotent` to the retry to say it is safe"),
    ("MP303", "fault-disables-retry", "warning", "a fault and retries on one rule: Istio turns retries off where a fault is injected",
     "move the fault to its own rule, or drop the retries there"),
    ("MP304", "http-on-tcp", "error", "an HTTP feature is used on a service whose ports are all tcp",
     "declare an http, http2 or grpc port, or remove the HTTP-only setting"),
    ("MP305", "self-reference", "warning", "a rule names the same service as caller and callee",
     "a service calling itself does not go through the mesh; remove the rule"),
    ("MP306", "mirror-to-destination", "warning", "a rule mirrors traffic to a version it already routes to",
     "mirror to a version that does not serve the live traffic"),
    # ---- unused
    ("MP401", "unused-version", "warning", "a service has a route, but no rule of it forwards or mirrors to this version",
     "route some traffic to it, or remove it"),
    ("MP402", "uncallable-service", "warning", "under default deny no allow rule lets anyone call this service, and it calls no one",
     "add `allow CALLER -> SERVICE`, or remove the service"),
)
