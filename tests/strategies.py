"""Hypothesis strategies that generate valid .mesh programs as text.

Two generators:

`mesh_programs(messy=False)`
    One file using every construct of the grammar: a `mesh` block (trust
    domain, mtls, default, tracing, metrics), services (namespace, account,
    ports, mtls, timeout, retry with every option, circuit, outlier, every
    balance policy, fault delay/abort, bare and block versions with labels,
    circuit, outlier and balance), routes (every match kind: `*`, methods,
    bare/exact/prefix/glob/regex paths, every header test, `from`; every
    action: forward, split, mirror, redirect, respond; timeout/retry/fault
    overrides), allow/deny rules with every source kind, methods and paths,
    limits, and every assertion kind; and north-south (issue 15): the
    egress stance, jwt providers (a local JWKS or a URL, token locations),
    ingresses (listeners http/https, hosts, accepted providers, route rules
    to services), external services with egress rules, `internet` sources
    with claim tests, keyed limits, query tests, header operations,
    rewrites, CORS on services and rules, and retry on status codes.
    Statements and top-level items come in random order. With `messy=True` the same programs are laid out badly:
    random spacing, `;` separators, one-line blocks, statements continued
    over lines after `,` `->` `~>` `<=` `=`, blank lines, own-line and
    trailing comments (some non-ASCII) and CRLF line ends, for the
    formatter's tests.

`small_policies(...)`
    A policy with 2-4 services whose meaning can be checked by brute force
    over `request_space(mesh)`. It draws only from this vocabulary:

    - services `SMALL_SERVICES` (web, api, db, auth), each `port 8080 http`,
      in a namespace from `SMALL_NAMESPACES` (front, back), with versions
      from `VERSIONS` (v1, v2, v3) and optionally its own `mtls` mode;
    - a `mesh` block with `mtls` from `mtls_modes` and `default` allow/deny;
    - methods from `METHODS` (GET, POST, PUT, DELETE);
    - path patterns from `PATH_PATTERNS` (the kinds in `path_kinds`), which
      `PROBE_PATHS` covers with matching and near-miss paths;
    - header tests from `HEADER_TESTS` on `HEADER_NAMES` (x-user, x-canary),
      which `HEADER_SETS` covers;
    - route rules (unless `routes=False`) with the actions in `actions`,
      whose splits always total 100%;
    - allow/deny rules with the source kinds in `source_kinds`;
    - `never`/`only`/`can` assertions unless `assertions=False`.

    Restrict the keyword arguments to what a target can express, e.g.
    `small_policies(path_kinds=("exact", "prefix"), actions=("forward",))`.

Every generated program passes `check_text` without errors; tests in
tests/test_fmt.py check that on each run.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import strategies as st

from meshpolicy.model.types import RETRY_CONDITIONS, Mesh
from meshpolicy.semantics.evaluate import Request
from meshpolicy.syntax.lexer import quote

# ---- the small vocabulary (shared with tests that enumerate requests) --------
SMALL_SERVICES = ("web", "api", "db", "auth")
SMALL_NAMESPACES = ("front", "back")
VERSIONS = ("v1", "v2", "v3")
METHODS = ("GET", "POST", "PUT", "DELETE")
PATH_PATTERNS = {
    "exact": ("/orders", "/items/1", 'exact "/admin"'),
    "prefix": ('prefix "/orders"', 'prefix "/adm"'),
    "glob": ("/orders/*", "/orders/**", "/items/*"),
    "regex": ('regex "/items/[0-9]+"', 'regex "/admin(/.*)?"'),
}
PATH_KINDS = tuple(PATH_PATTERNS)
# Paths that each pattern above matches, and near misses of each.
PROBE_PATHS = (
    "/", "/orders", "/orders/", "/orders/7", "/orders/7/lines", "/ordersx", "/items", "/items/1",
    "/items/12", "/items/x", "/items/1/x", "/admin", "/admin/", "/admin/keys", "/adm", "/other",
)
HEADER_NAMES = ("x-user", "x-canary")
HEADER_TESTS = {
    "exact": ('header "x-user" = "alice"', 'header "x-canary" = "1"'),
    "prefix": ('header "x-user" prefix "al"',),
    "regex": ('header "x-canary" ~ "[0-9]+"',),
    "present": ('header "x-canary" present',),
    "absent": ('header "x-user" absent',),
}
HEADER_KINDS = tuple(HEADER_TESTS)
HEADER_SETS = (
    (),
    (("x-user", "alice"),),
    (("x-user", "bob"),),
    (("x-canary", "1"),),
    (("x-user", "alice"), ("x-canary", "yes")),
)
ACTIONS = ("forward", "split", "mirror", "redirect", "respond")
SOURCE_KINDS = ("service", "namespace", "authenticated", "any")
MTLS_MODES = ("strict", "permissive", "off")
SPLITS = {2: ((50, 50), (90, 10), (75, 25), (12.5, 87.5)), 3: ((20, 30, 50), (34, 33, 33))}


def request_space(mesh: Mesh, headers: bool = True) -> list[Request]:
    """Every request over the small vocabulary: each declared service or no
    identity as source, each service as destination, each method in METHODS,
    each path in PROBE_PATHS and (with headers) each header set in HEADER_SETS."""
    names = [s.name for s in mesh.services]
    header_sets = HEADER_SETS if headers else ((),)
    return [
        Request(src, dst, m, p, h)
        for src, dst, m, p, h in itertools.product([*names, None], names, METHODS, PROBE_PATHS, header_sets)
    ]


def _pct(x: float) -> str:
    return f"{x:g}%"


# ---- small_policies ---------------------------------------------------------------
@st.composite
def small_policies(draw, *, path_kinds=PATH_KINDS, header_kinds=HEADER_KINDS, actions=ACTIONS,
                   source_kinds=SOURCE_KINDS, mtls_modes=MTLS_MODES, routes=True, assertions=True,
                   max_services=4):
    """A small policy as text (see the module docstring for its vocabulary)."""
    n = draw(st.integers(2, max(2, min(max_services, len(SMALL_SERVICES)))))
    names = list(SMALL_SERVICES[:n])
    versions = {s: list(VERSIONS[: draw(st.integers(1, 3))]) for s in names}
    out = [
        "mesh small {",
        '  trust_domain "example.org"',
        f"  mtls {draw(st.sampled_from(mtls_modes))}",
        f"  default {draw(st.sampled_from(('allow', 'deny')))}",
        "}",
    ]
    for s in names:
        out.append(f"service {s} {{")
        out.append(f"  namespace {draw(st.sampled_from(SMALL_NAMESPACES))}")
        out.append("  port 8080 http")
        if draw(st.integers(0, 3)) == 0:
            out.append(f"  mtls {draw(st.sampled_from(mtls_modes))}")
        out.extend(f"  version {v}" for v in versions[s])
        out.append("}")
    paths = [p for k in path_kinds for p in PATH_PATTERNS[k]]
    headers = [h for k in header_kinds for h in HEADER_TESTS[k]]

    def conditions(sep: str) -> str:
        parts = ""
        if draw(st.booleans()):
            parts += " " + ", ".join(draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True)))
        if paths and draw(st.booleans()):
            parts += " " + sep.join(draw(st.lists(st.sampled_from(paths), min_size=1, max_size=2, unique=True)))
        return parts

    if routes and actions:
        for s in draw(st.lists(st.sampled_from(names), max_size=n, unique=True)):
            out.append(f"route {s} {{")
            for _ in range(draw(st.integers(1, 4))):
                out.append("  " + draw(_small_rule(names, versions[s], headers, conditions, actions)))
            out.append("}")
    for _ in range(draw(st.integers(0, 6))):
        effect = draw(st.sampled_from(("allow", "allow", "deny")))
        srcs = draw(st.lists(_small_source(names, source_kinds), min_size=1, max_size=2, unique=True))
        out.append(f"{effect} {', '.join(srcs)} -> {draw(st.sampled_from(names))}" + conditions(", "))
    if assertions:
        for _ in range(draw(st.integers(0, 3))):
            a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
            kind = draw(st.sampled_from(("never", "only", "can")))
            if kind == "never":
                head = f"assert never {a} {draw(st.sampled_from(('->', '~>')))} {b}"
            elif kind == "only":
                srcs = draw(st.lists(_small_source(names, source_kinds), min_size=1, max_size=2, unique=True))
                head = f"assert only {', '.join(srcs)} -> {b}"
            else:
                head = f"assert can {a} -> {b}"
            out.append(head + conditions(", "))
    return "\n".join(out) + "\n"


def _small_source(names, kinds):
    def one(kind):
        if kind == "service":
            return st.sampled_from(names)
        if kind == "namespace":
            return st.sampled_from(SMALL_NAMESPACES).map(lambda ns: f"namespace {ns}")
        return st.just("*" if kind == "any" else "authenticated")

    return st.sampled_from(kinds).flatmap(one)


@st.composite
def _small_rule(draw, names, versions, headers, conditions, actions):
    parts = []
    if draw(st.booleans()):
        parts.append("from " + ", ".join(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))))
    if headers and draw(st.booleans()):
        parts.append(draw(st.sampled_from(headers)))
    parts.append(conditions(" ").strip())
    match = " ".join(p for p in parts if p) or "*"
    kinds = [a for a in actions if a not in ("split", "mirror") or len(versions) > 1]
    kind = draw(st.sampled_from(kinds or ["forward"]))
    if kind == "forward":
        action = draw(st.sampled_from(versions)) + draw(st.sampled_from(("", " 100%")))
    elif kind in ("split", "mirror"):
        k = draw(st.integers(2, len(versions)))
        chosen = draw(st.permutations(versions))[:k]
        weights = draw(st.sampled_from(SPLITS[k]))
        action = ", ".join(f"{v} {_pct(w)}" for v, w in zip(chosen, weights))
        if kind == "mirror":
            dest = draw(st.sampled_from(versions))
            action = f"{dest} mirror {draw(st.sampled_from([v for v in versions if v != dest]))}"
            action += draw(st.sampled_from(("", " 5%", " 100%")))
    elif kind == "redirect":
        action = f"redirect {quote(draw(st.sampled_from(('/items', 'https://example.org/x'))))}"
        action += draw(st.sampled_from(("", " 301", " 302", " 307", " 308")))
    else:
        action = f"respond {draw(st.sampled_from((200, 403, 404, 503)))}"
        action += draw(st.sampled_from(("", ' "no"')))
    return f"{match} -> {action}"


# ---- mesh_programs: every construct -----------------------------------------------
# Names are DNS labels (they are the default service account); `retry` is
# also a keyword elsewhere, which names may be.
SERVICE_NAMES = ("web", "api", "orders", "payments-v2", "ledger-db", "retry")
NAMESPACES = ("front", "shop", "pay")
TIMEOUTS = ("1s", "1500ms", "2s", "1m", "1.5s")  # all >= (3 + 1) x the longest per_try
PER_TRY = ("100ms", "250ms", "0.25s")
DURATIONS = ("50ms", "1s", "2m", "1h", "10s")
PERCENTS = ("0%", "1%", "5%", "12.5%", "50%", "100%", "0.1%")
# north-south: names of their own (ingress, jwt and external names share the services' name space)
PROVIDER_NAMES = ("idp", "partners")
INGRESS_NAMES = ("edge", "public-gw")
EXTERNAL_NAMES = ("stripe", "maps-api")
_NS = (Path(__file__).parent / "fixtures" / "northsouth").as_posix()  # a JWKS, a certificate and its key
RETRY_STATUSES = ("503", "429", "502")
COMMENTS = ("# note", "#tight", "# ünïcödé ✓ 東京", "# -> { not code } ;", "##", "# trailing spaces   ", "#")

# A statement is a list of tokens; a block is (opener tokens, children).
Stmt = list
Block = tuple


def _tok(*parts) -> Stmt:
    return [str(p) for p in parts]


def _commas(values) -> list[str]:
    out: list[str] = []
    for v in values:
        if out:
            out.append(",")
        out.extend(v if isinstance(v, list) else [v])
    return out


@st.composite
def _retry(draw) -> Stmt:
    if draw(st.integers(0, 5)) == 0:
        return _tok("retry", "off")
    opts = []
    if draw(st.booleans()):
        opts.append(["per_try", draw(st.sampled_from(PER_TRY))])
    if draw(st.booleans()):
        conds = draw(st.lists(st.sampled_from(RETRY_CONDITIONS + RETRY_STATUSES), min_size=1, max_size=3,
                              unique=True))
        opts.append(["on", *_commas(conds)])
    if draw(st.booleans()):
        opts.append(["backoff", draw(st.sampled_from(("10ms", "25ms")))]
                    + draw(st.sampled_from(([], ["max", "250ms"], ["max", "1s"]))))
    if draw(st.booleans()):
        opts.append(["budget", draw(st.sampled_from(("20%", "100%", "12.5%")))]
                    + draw(st.sampled_from(([], ["min", "5"], ["min", "1"]))))
    if draw(st.booleans()):
        opts.append(["non_idempotent"])
    opts = draw(st.permutations(opts))
    return ["retry", str(draw(st.integers(1, 3)))] + [t for o in opts for t in o]


@st.composite
def _circuit(draw) -> Stmt:
    fields = draw(st.lists(st.sampled_from(("max_connections", "max_pending", "max_requests", "max_retries")),
                           min_size=1, max_size=4, unique=True))
    return ["circuit"] + [t for f in fields for t in (f, str(draw(st.integers(1, 10_000))))]


@st.composite
def _outlier(draw) -> Stmt:
    opts = {
        "consecutive_5xx": lambda: str(draw(st.integers(1, 20))),
        "consecutive_gateway": lambda: str(draw(st.integers(1, 20))),
        "interval": lambda: draw(st.sampled_from(DURATIONS)),
        "eject": lambda: draw(st.sampled_from(DURATIONS)),
        "max": lambda: draw(st.sampled_from(("10%", "50%", "100%"))),
    }
    chosen = draw(st.lists(st.sampled_from(list(opts)), min_size=1, max_size=5, unique=True))
    return ["outlier"] + [t for k in chosen for t in (k, opts[k]())]


def _balance(http: bool):
    simple = [["balance", p] for p in ("round_robin", "least_request", "random")]
    hashed = [["balance", "hash", "source_ip"]] + ([["balance", "hash", "header", quote("x-user")]] if http else [])
    return st.sampled_from(simple + hashed)


@st.composite
def _fault(draw) -> Stmt:
    opts = []
    if draw(st.booleans()):
        opts.append(["delay", draw(st.sampled_from(DURATIONS)), draw(st.sampled_from(PERCENTS))])
    if not opts or draw(st.booleans()):
        opts.append(["abort", str(draw(st.sampled_from((500, 503, 404, 429)))), draw(st.sampled_from(PERCENTS))])
    return ["fault"] + [t for o in draw(st.permutations(opts)) for t in o]


@st.composite
def _version(draw, name: str, http: bool):
    if draw(st.booleans()):
        return _tok("version", name)
    children: list = []
    keys = draw(st.lists(st.sampled_from(("version", "track", '"app.kubernetes.io/name"', "tier_1")),
                         max_size=3, unique=True))
    values = {"version": name}
    if keys:
        labels = [[k, ":", quote(values.get(k, draw(st.sampled_from(("canary", "a.b-c_d", "x")))))] for k in keys]
        # Labels may be one statement or several.
        cut = draw(st.integers(1, len(labels)))
        children.append(_commas(labels[:cut]))
        if labels[cut:]:
            children.append(_commas(labels[cut:]))
    if draw(st.booleans()):
        children.append(draw(_circuit()))
    if draw(st.booleans()):
        children.append(draw(_outlier()))
    if draw(st.booleans()):
        children.append(draw(_balance(http)))
    return (["version", name], draw(st.permutations(children)))


@st.composite
def _service(draw, name: str, tcp: bool, versions: list[str]):
    http = not tcp
    items: list = []
    if draw(st.booleans()):
        items.append(_tok("namespace", draw(st.sampled_from(NAMESPACES))))
    if draw(st.booleans()):
        # each service its own account: a shared one is an error once a rule names one of them (MP108)
        items.append(_tok("account", draw(st.sampled_from((f"{name}-sa", f"run-{name}", name.replace("_", "-"))))))
    numbers = draw(st.lists(st.sampled_from((80, 443, 8080, 9000, 5432)), min_size=1, max_size=2, unique=True))
    for i, number in enumerate(numbers):
        proto = "tcp" if tcp else (draw(st.sampled_from(("http", "http2", "grpc"))) if i == 0
                                   else draw(st.sampled_from(("http", "http2", "grpc", "tcp"))))
        items.append(_tok("port", number, proto))
    if draw(st.booleans()):
        items.append(_tok("mtls", draw(st.sampled_from(MTLS_MODES))))
    if http and draw(st.booleans()):
        items.append(_tok("timeout", draw(st.sampled_from(TIMEOUTS))))
    if http and draw(st.booleans()):
        items.append(draw(_retry()))
    if draw(st.booleans()):
        items.append(draw(_circuit()))
    if draw(st.booleans()):
        items.append(draw(_outlier()))
    if draw(st.booleans()):
        items.append(draw(_balance(http)))
    if http and draw(st.booleans()):
        items.append(draw(_fault()))
    if http and draw(st.integers(0, 3)) == 0:
        items.append(draw(_cors()))
    for v in versions:
        items.append(draw(_version(v, http)))
    return (["service", name], draw(st.permutations(items)))


@st.composite
def _path(draw) -> list[str]:
    kind = draw(st.sampled_from(("bare", "glob", "exact", "prefix", "regex")))
    if kind == "bare":
        return [draw(st.sampled_from(("/orders", "/a/b.c", "/items/1", "/")))]
    if kind == "glob":
        return [draw(st.sampled_from(("/orders/*", "/orders/**", "/a/*/b", "/**")))]
    if kind == "regex":
        return ["regex", quote(draw(st.sampled_from(("/items/[0-9]+", "^/v[0-9]+/.*$", "/a\\.b"))))]
    return [kind, quote(draw(st.sampled_from(("/admin", "/api/", "/ünï"))))]


_HEADER = st.sampled_from([
    ["header", quote("x-user"), "=", quote("alice")],
    ["header", quote("x-canary"), "prefix", quote("on")],
    ["header", quote("x-canary"), "~", quote("[0-9]+")],
    ["header", quote("end-user"), "present"],
    ["header", quote("x-user"), "absent"],
])


_QUERY = st.sampled_from([
    ["query", quote("view"), "=", quote("full")],
    ["query", quote("page"), "prefix", quote("1")],
    ["query", quote("id"), "~", quote("[0-9]+")],
    ["query", quote("debug"), "present"],
])
_HEADER_OP = st.sampled_from([
    ["set", "request", "header", quote("x-from"), quote("mesh")],
    ["add", "request", "header", quote("x-trace-tag"), quote("a b")],
    ["remove", "request", "header", quote("x-internal")],
    ["set", "response", "header", quote("cache-control"), quote("no-store")],
    ["add", "response", "header", quote("x-served-by"), quote("mesh")],
    ["remove", "response", "header", quote("server")],
])


@st.composite
def _cors(draw) -> Stmt:
    credentials = draw(st.booleans())
    origins = draw(st.lists(st.sampled_from(("https://shop.example.com", "http://localhost:3000", "https://a.example:8443")
                                            + (() if credentials else ("*",))), min_size=1, max_size=2, unique=True))
    opts = [["origins", *_commas([quote(o) for o in origins])]]
    if draw(st.booleans()):
        opts.append(["methods", *_commas(draw(st.lists(st.sampled_from(("GET", "POST", "PUT")), min_size=1,
                                                       max_size=2, unique=True)))])
    if draw(st.booleans()):
        opts.append(["headers", *_commas([quote(h) for h in draw(st.lists(
            st.sampled_from(("content-type", "Authorization", "x-api-key")), min_size=1, max_size=2, unique=True))])])
    if draw(st.booleans()):
        opts.append(["expose", quote("x-total")])
    if credentials:
        opts.append(["credentials"])
    if draw(st.booleans()):
        opts.append(["max_age", draw(st.sampled_from(("1h", "600s")))])
    return ["cors"] + [t for o in draw(st.permutations(opts)) for t in o]


@st.composite
def _l7_options(draw, forwards: bool, regex_path: bool) -> list[Stmt]:
    """Rewrite, header operations and CORS for a rule (a rewrite only where it forwards)."""
    out: list[Stmt] = []
    if forwards and draw(st.integers(0, 3)) == 0:
        rw = ["rewrite"]
        if not regex_path and draw(st.booleans()):
            rw.append(quote(draw(st.sampled_from(("/", "/v2/", "/orders")))))
        if len(rw) == 1 or draw(st.booleans()):
            rw += ["host", quote(draw(st.sampled_from(("orders.internal", "api.internal:8080"))))]
        out.append(rw)
    if draw(st.integers(0, 3)) == 0:
        out.extend(draw(st.lists(_HEADER_OP, min_size=1, max_size=3)))
    if forwards and draw(st.integers(0, 4)) == 0:
        out.append(draw(_cors()))
    return out


@st.composite
def _rule(draw, names: list[str], versions: list[str], ingress: bool = False) -> Stmt:
    """A route rule; with `ingress`, an ingress's (no `from`; `names` are the services it may forward to)."""
    match: list = []
    regex_path = False
    if draw(st.integers(0, 4)) == 0:
        match = ["*"]
    else:
        items = []
        if not ingress and draw(st.booleans()):
            items.append(["from", *_commas(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True)))])
        items.extend(draw(st.lists(_HEADER, max_size=2)))
        items.extend(draw(st.lists(_QUERY, max_size=1)))
        if draw(st.booleans()):
            items.append(_commas(draw(st.lists(st.sampled_from(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")),
                                               min_size=1, max_size=3, unique=True))))
        paths = draw(st.lists(_path(), max_size=2))
        regex_path = any(p[0] == "regex" for p in paths)
        items.extend(paths)
        if not items:
            items.append(["GET"])
        match = [t for it in draw(st.permutations(items)) for t in it]
    kinds = ["forward", "redirect", "respond"] + (["split", "mirror"] if len(versions) > 1 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "forward":
        action = [draw(st.sampled_from(versions))] + draw(st.sampled_from(([], ["100%"])))
    elif kind == "split":
        k = min(len(versions), draw(st.integers(2, 3)))
        chosen = draw(st.permutations(versions))[:k]
        action = _commas([[v, _pct(w)] for v, w in zip(chosen, draw(st.sampled_from(SPLITS[k])))])
    elif kind == "mirror":
        dest, other = draw(st.permutations(versions))[:2]
        action = [dest, "mirror", other] + draw(st.sampled_from(([], ["5%"], ["100%"])))
    elif kind == "redirect":
        action = ["redirect", quote(draw(st.sampled_from(("/items", "https://example.org/a?b=c"))))]
        action += draw(st.sampled_from(([], ["301"], ["308"])))
    else:
        action = ["respond", str(draw(st.sampled_from((200, 403, 405, 503))))]
        action += draw(st.sampled_from(([], [quote("nope")], [quote('say "hi"\\\t ünï')])))
    overrides = []
    if not ingress:  # timeout, retry and fault belong to the service's own route
        if draw(st.integers(0, 3)) == 0:
            overrides.append(["timeout", draw(st.sampled_from(TIMEOUTS))])
        if draw(st.integers(0, 3)) == 0:
            overrides.append(draw(_retry()))
        if draw(st.integers(0, 3)) == 0:
            overrides.append(draw(_fault()))
    overrides += draw(_l7_options(kind in ("forward", "split", "mirror"), regex_path))
    return match + ["->"] + action + [t for o in draw(st.permutations(overrides)) for t in o]


def _source(names, providers=(), internet: bool = False):
    """A rule source; with `internet`, also `internet [with jwt [P] claims]` (claims only with providers)."""
    kinds = [
        st.sampled_from(names).map(lambda n: [n]),
        st.sampled_from(NAMESPACES).map(lambda ns: ["namespace", ns]),
        st.just(["*"]),
        st.just(["authenticated"]),
    ]
    if internet:
        kinds.append(_internet(providers))
    return st.one_of(*kinds)


_CLAIM = st.sampled_from([
    ["scope", "has", quote("orders:write")],
    ["role", "=", quote("admin")],
    [quote("https://shop.example/roles"), "has", quote("admin")],
    ["email_verified", "=", quote("true")],
])


@st.composite
def _jwt_requirement(draw, providers) -> list[str]:
    out = ["with", "jwt"]
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(providers)))
    claims = draw(st.lists(_CLAIM, max_size=2))
    for i, c in enumerate(claims):
        out += (["and"] if i else []) + c
    return out


@st.composite
def _internet(draw, providers, token: bool | None = None) -> list[str]:
    """`internet`, with a token requirement when providers exist (always with token=True)."""
    if providers and (token or (token is None and draw(st.booleans()))):
        return ["internet"] + draw(_jwt_requirement(providers))
    return ["internet"]


@st.composite
def _jwt_provider(draw, name: str) -> Block:
    items = [_tok("issuer", quote(f"https://{name}.example/"))]
    if draw(st.booleans()):
        items.append(["audience", *_commas([quote(a) for a in draw(st.lists(st.sampled_from(("shop-api", "shop-web")),
                                                                             min_size=1, max_size=2, unique=True))])])
    if draw(st.booleans()):
        items.append(_tok("jwks", quote(f"{_NS}/auth.jwks.json")))
    else:
        items.append(_tok("jwks_uri", quote(f"https://{name}.example/.well-known/jwks.json")))
    locations = draw(st.lists(st.sampled_from((
        ["token", "header", quote("authorization"), "prefix", quote("Bearer ")],
        ["token", "header", quote("x-token")],
        ["token", "query", quote("access_token")],
        ["token", "cookie", quote("session")],
    )), max_size=2, unique_by=lambda t: " ".join(t))) if draw(st.booleans()) else []
    items += locations
    return (["jwt", name], draw(st.permutations(items)))


@st.composite
def _ingress(draw, name: str, services: list[str], providers: list[str]) -> Block:
    items: list = []
    if draw(st.booleans()):
        items.append(_tok("namespace", draw(st.sampled_from(NAMESPACES))))
    if draw(st.booleans()):
        items.append(_tok("account", f"{name}-gw"))
    ports = draw(st.lists(st.sampled_from((8080, 8443, 80, 443)), min_size=1, max_size=2, unique=True))
    for port in ports:
        if port in (8443, 443) and draw(st.booleans()):
            items.append(["listen", str(port), "https", "cert", quote(f"{_NS}/web.crt"), "key", quote(f"{_NS}/web.key")])
        else:
            items.append(_tok("listen", port, "http"))
    items.append(["hosts", *_commas([quote(h) for h in draw(st.lists(
        st.sampled_from(("shop.example.com", "*.shop.example.com", "api.example.com")), min_size=1, max_size=2,
        unique=True))])])
    if providers and draw(st.booleans()):
        items.append(["jwt", *_commas(draw(st.lists(st.sampled_from(providers), min_size=1, max_size=2, unique=True)))])
    items.extend(draw(st.lists(_rule(services, services, ingress=True), min_size=1, max_size=3)))
    return ([f"ingress", name], draw(st.permutations(items)))


@st.composite
def _external(draw, name: str) -> tuple[Block, bool]:
    """(the block, whether it has an http or tls port, so that rules to it may name methods and paths)."""
    items: list = []
    if draw(st.booleans()):
        items.append(_tok("namespace", draw(st.sampled_from(NAMESPACES))))
    hosts = draw(st.lists(st.sampled_from((f"api.{name}.example", f"{name}.example.com", "10.0.0.7")), min_size=1,
                          max_size=2, unique=True))
    items.append(["host", *_commas([quote(h) for h in hosts])])
    protocols = draw(st.lists(st.sampled_from(("http", "tls", "tcp")), min_size=1, max_size=2, unique=True))
    for proto in protocols:
        items.append(_tok("port", {"http": 80, "tls": 443, "tcp": 5432}[proto], proto))
    if draw(st.booleans()):
        items.append(_tok("timeout", draw(st.sampled_from(TIMEOUTS))))
    if draw(st.booleans()):
        items.append(["retry", "2", "on", "connect-failure"])
    return (["external", name], draw(st.permutations(items))), protocols != ["tcp"]


@st.composite
def _conditions(draw, http: bool) -> list[str]:
    if not http:
        return []
    out: list[str] = []
    if draw(st.booleans()):
        out += _commas(draw(st.lists(st.sampled_from(("GET", "POST", "PUT", "DELETE")), min_size=1, max_size=3,
                                     unique=True)))
    if draw(st.booleans()):
        out += _commas(draw(st.lists(_path(), min_size=1, max_size=3)))
    return out


@st.composite
def _mesh_block(draw) -> Block:
    items = []
    if draw(st.booleans()):
        items.append(_tok("trust_domain", quote(draw(st.sampled_from(("example.org", "shop.example"))))))
    if draw(st.booleans()):
        items.append(_tok("mtls", draw(st.sampled_from(MTLS_MODES))))
    if draw(st.booleans()):
        items.append(_tok("default", draw(st.sampled_from(("allow", "deny")))))
    if draw(st.booleans()):
        if draw(st.integers(0, 3)) == 0:
            items.append(_tok("tracing", "off"))
        else:
            formats = draw(st.lists(st.sampled_from(("w3c", "b3")), min_size=1, max_size=2, unique=True))
            items.append(["tracing", *_commas(formats)] + draw(st.sampled_from(([], ["sample", "1%"],
                                                                                 ["sample", "100%"]))))
    if draw(st.booleans()):
        items.append(_tok("metrics", draw(st.sampled_from(("on", "off")))))
    if draw(st.integers(0, 3)) == 0:
        items.append(_tok("egress", draw(st.sampled_from(("registry_only", "allow_any")))))
    return (["mesh", draw(st.sampled_from(("shop", "m", "prod-1")))], draw(st.permutations(items)))


@st.composite
def _program(draw):
    """The items of one valid program: [Block | Stmt]."""
    names = draw(st.lists(st.sampled_from(SERVICE_NAMES), min_size=1, max_size=4, unique=True))
    tcp = {n: draw(st.integers(0, 4)) == 0 for n in names}
    http = [n for n in names if not tcp[n]]
    routed = draw(st.lists(st.sampled_from(http), unique=True)) if http else []
    versions = {}
    for n in names:
        k = draw(st.integers(1 if n in routed else 0, 3))
        versions[n] = list(VERSIONS[:k])
    items: list = []
    if draw(st.integers(0, 4)) > 0:
        items.append(draw(_mesh_block()))
    for n in names:
        items.append(draw(_service(n, tcp[n], versions[n])))
    for n in routed:
        rules = draw(st.lists(_rule(names, versions[n]), min_size=0, max_size=4))
        items.append((["route", n], rules))
    # north-south: providers, ingresses (to http services), externals
    providers = draw(st.lists(st.sampled_from(PROVIDER_NAMES), max_size=2, unique=True))
    items.extend(draw(_jwt_provider(p)) for p in providers)
    if http:
        for g in draw(st.lists(st.sampled_from(INGRESS_NAMES), max_size=2, unique=True)):
            items.append(draw(_ingress(g, http, providers)))
    externals = {}
    for e in draw(st.lists(st.sampled_from(EXTERNAL_NAMES), max_size=2, unique=True)):
        block, l7 = draw(_external(e))
        items.append(block)
        externals[e] = l7
    for _ in range(draw(st.integers(0, 4))):
        target = draw(st.sampled_from(names))
        srcs = draw(st.lists(_source(names, providers, internet=not tcp[target]), min_size=1, max_size=3))
        items.append([draw(st.sampled_from(("allow", "deny")))] + _commas(srcs) + ["->", target]
                     + draw(_conditions(not tcp[target])))
    for e, l7 in externals.items():  # egress rules: any source but the internet
        for _ in range(draw(st.integers(0, 2))):
            srcs = draw(st.lists(_source(names), min_size=1, max_size=2))
            items.append([draw(st.sampled_from(("allow", "deny")))] + _commas(srcs) + ["->", e]
                         + draw(_conditions(l7)))
    if http:
        for _ in range(draw(st.integers(0, 2))):
            key = draw(st.sampled_from(([], ["per", "header", quote("x-api-key")], ["per", "source_ip"])
                                       + ((["per", "claim", quote("sub")], ["per", "claim", "sub"]) if providers
                                          else ())))
            if key[:2] == ["per", "claim"]:  # only tokens carry claims
                srcs = draw(st.lists(_internet(providers, token=True), min_size=1, max_size=2))
            else:
                srcs = draw(st.lists(_source(names, providers, internet=True), min_size=1, max_size=2))
            stmt = ["limit"] + _commas(srcs) + ["->", draw(st.sampled_from(http)),
                                                 f"{draw(st.integers(1, 10_000))}/{draw(st.sampled_from('smh'))}"]
            items.append(stmt + draw(st.sampled_from(([], ["burst", "10"]))) + key)
    for _ in range(draw(st.integers(0, 4))):
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        if draw(st.integers(0, 3)) == 0:
            a = " ".join(draw(_internet(providers)))
        reach = draw(st.sampled_from(("->", "~>")))
        kind = draw(st.sampled_from(("never", "only", "can", "amplification", "latency")))
        if kind == "never":
            items.append(["assert", "never", *a.split(" "), reach, b] + draw(_conditions(not tcp[b])))
        elif kind == "only":
            items.append(["assert", "only"]
                         + _commas(draw(st.lists(_source(names, providers, internet=True), min_size=1, max_size=2)))
                         + ["->", b] + draw(_conditions(not tcp[b])))
        elif kind == "can":
            items.append(["assert", "can", *a.split(" "), "->", b] + draw(_conditions(not tcp[b])))
        elif kind == "amplification":
            a = a if not a.startswith("internet") else draw(st.sampled_from(names))
            items.append(["assert", "amplification", a, reach, b, "<=", str(draw(st.integers(1, 100)))])
        else:
            a = a if not a.startswith("internet") else draw(st.sampled_from(names))
            items.append(["assert", "latency", a, reach, b, "<=", draw(st.sampled_from(DURATIONS))])
    return draw(st.permutations(items))


# ---- layout -------------------------------------------------------------------------
_CONTINUE = {",", "->", "~>", "<=", "="}
_TIGHT = {",", ":"}


class _Plain:
    """Canonical-looking layout: 2-space indent, one statement a line."""

    def file(self, items) -> str:
        out: list[str] = []
        for it in items:
            self.item(it, 0, out)
        return "\n".join(out) + "\n"

    def item(self, it, depth, out):
        pad = "  " * depth
        if isinstance(it, tuple):
            opener, children = it
            out.append(f"{pad}{' '.join(opener)} {{")
            for c in children:
                self.item(c, depth + 1, out)
            out.append(f"{pad}}}")
        else:
            out.append(pad + " ".join(it))


class _Messy:
    """A valid but careless layout. Choices come from one hypothesis-seeded
    Random: drawing each space through hypothesis made generation 4x slower."""

    def __init__(self, rnd):
        self.rnd = rnd
        self.nl = rnd.choice(("\n", "\n", "\r\n"))

    def chance(self, p: int) -> bool:
        """True one time in p."""
        return self.rnd.randrange(p) == 0

    def comment(self) -> str:
        return self.rnd.choice(COMMENTS)

    def newline(self, indent: str = "") -> str:
        """A line break, maybe with a trailing comment, blank lines and own-line comments."""
        out = ""
        if self.chance(5):
            out += " " + self.comment()
        out += self.nl
        if self.chance(5):
            out += self.rnd.choice(("", "  ", "\t")) + self.nl
        if self.chance(5):
            out += self.rnd.choice(("", " ", "    ")) + self.comment() + self.nl
        return out + indent

    def space(self, a: str, b: str) -> str:
        if (a in _TIGHT or b in _TIGHT) and self.chance(3):
            return ""
        return self.rnd.choice((" ", " ", "  ", "\t"))

    def stmt(self, toks, indent) -> str:
        out = toks[0]
        for prev, tok in zip(toks, toks[1:]):
            if prev in _CONTINUE and self.chance(6):
                out += self.newline(indent + "    ")
            else:
                out += self.space(prev, tok)
            out += tok
        return out

    def separator(self, indent: str, prev) -> str:
        """Between two items of one body (prev: the first of them)."""
        if self.chance(4):
            if isinstance(prev, tuple):
                return " "  # `}` ends an item by itself
            # A bare path takes a `;` or `}` written right after it into the path.
            tight = not prev[-1].startswith("/")
            return self.rnd.choice(("; ", ";", " ; ") if tight else (" ; ", " ;"))
        return self.newline(indent)

    def body(self, items, depth) -> str:
        indent = self.rnd.choice(("  " * depth, "\t" * depth, " " * depth))
        out = ""
        for i, it in enumerate(items):
            if i:
                out += self.separator(indent, items[i - 1])
            out += self.item(it, depth, indent)
        return out

    def item(self, it, depth, indent) -> str:
        if not isinstance(it, tuple):
            return self.stmt(it, indent)
        opener, children = it
        head = self.stmt(opener, indent) + self.rnd.choice((" {", "{", "  {"))
        if not children:
            return head + self.rnd.choice(("}", " }", self.nl + indent + "}"))
        inner = self.rnd.choice(("  " * (depth + 1), "\t" * (depth + 1)))
        start = " " if self.chance(4) else self.newline(inner)
        end = " " if self.chance(4) else self.newline(indent)
        return head + start + self.body(children, depth + 1) + end + "}"

    def file(self, items) -> str:
        lead = self.newline() if self.chance(4) else ""
        return lead + self.body(items, 0) + self.rnd.choice(("", self.nl, self.nl + self.nl))


@st.composite
def mesh_programs(draw, messy: bool = False) -> str:
    """The text of one valid file using every construct (see the module docstring)."""
    items = draw(_program())
    return _Messy(draw(st.randoms(use_true_random=False))).file(items) if messy else _Plain().file(items)
