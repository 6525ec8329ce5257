"""Method- and path-scoped authorization as Linkerd inbound routes.

Linkerd authorizes a request by the one inbound HTTPRoute (parentRef: the
Server) it matches: an AuthorizationPolicy targeting that route admits its
authentications, a route nobody authorizes refuses (403), and a request no
route matches is refused (404). So for a destination whose allow or deny
rules name methods or paths, its request space is cut into classes that
the policy treats alike, one HTTPRoute and one AuthorizationPolicy per
class, and the Server itself authorizes nothing (accessPolicy deny).

Classes. The rules' path patterns split the path space into atoms (the
verifier's meshpolicy/verify/atoms.py: every path in an atom matches the
same patterns), and the methods the rules name, plus "any other method",
split the methods. A cell (method, atom) gets every caller's decision
from the reference evaluator on the atom's witness, which stands for the
whole atom because no rule can tell its paths apart; cells with the same
callers admitted form one class.

Layout. The proxy picks, among the matches that hold, the one with the
longest path match (a RegularExpression or Exact match counts the whole
path, a PathPrefix its prefix, no path counts 1), then one with a method,
then more headers, and only then route order (creation time, then name:
nothing meshc controls). `_winners` is that ranking; the layout emits
matches tier by tier (the methods the rules do not name first, without a
method; then each named method, with it) and keeps only what the ranking
resolves to each cell's class:

- a catch-all route (PathPrefix `/`) holds the class of `/` for an unnamed
  method (D0); `/` is an atom of its own, so no method-less whole-path
  match of another class ties with the catch-all there;
- a whole-path match (Exact, or a RegularExpression holding only for
  normalized paths: normal_paths.py) of a pattern every atom of which has
  one class in the tier, when some of them would otherwise get another;
- a PathPrefix P for a subtree pattern (`P/**`, or the prefix `P/`), which
  every whole-path match outranks, when it fixes atoms of the subtree and
  what it would break is fixable by a whole-path match (the stem P is an
  atom of its own; its Exact match would tie with the PathPrefix).

Every atom of every tier is then checked by the ranking (exact on the
witnesses: every other path of an atom is longer than any prefix holding
on it). When patterns overlap and their shared paths are authorized
differently from the rest of either in a way no ranking resolves (say
`/orders/**` allowed, `/orders` and `/orders/admin/*` not), two routes
would tie: that is MP750, never a guess.

Regex dialect. Linkerd's proxy compiles RegularExpression paths with the
Rust `regex` crate and requires the match to span the whole path. The
crate's syntax is RE2's (no look-around, no backreferences; the same
repetition, class and group syntax), with one difference that matters
here: `\\d`, `\\w`, `\\s` and `\\b` are Unicode-aware, RE2's are ASCII. So
Perl classes are spelled as the ASCII sets RE2 means (`dialect_regex`),
and what cannot be spelled so (`\\b`, `\\B`, a negated Perl class inside a
set) or that only RE2 has (`\\Q...\\E`, `\\C`, octal escapes) is MP751.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ...codes import diag
from ...model.types import HTTP_METHODS, AuthRule, Mesh
from ...plan import ServicePlan
from ...semantics.evaluate import Request, authorize
from ..meshproxy.lower import anchored
from . import normal_paths

POLICY = "policy.linkerd.io"
MAX_MATCHES = 8  # per rule (the CRD's maxItems)
MAX_RULES = 16  # per route (the CRD's maxItems)
OTHER = None  # the method tier of every method the rules do not name


@dataclass(frozen=True)
class Admitted:
    """Who a class admits: caller classes (Classes.caller_classes: mesh
    identities the destination's rules cannot tell apart), identities the
    mesh does not know (`authenticated`, `*`), callers without one."""

    classes: frozenset[int]
    strangers: bool
    unauthenticated: bool


@dataclass
class Layout:
    """One destination's classes: the catch-all's (with the matches it needs
    besides `PathPrefix /`), then the others with their matches, each
    (method or None, "whole" or "prefix", pattern key), in a stable order."""

    default: Admitted
    default_matches: list[tuple[str | None, str, tuple[str, str]]]
    classes: list[tuple[Admitted, list[tuple[str | None, str, tuple[str, str]]]]]


def route_scoped(mesh: Mesh, dest: str) -> bool:
    """Does some allow or deny rule of the destination name methods or paths?"""
    return any(r.methods or r.paths for r in mesh.rules_by_target.get(dest, []))


class Unlayable(Exception):
    def __init__(self, code: str, message: str, span=None):
        super().__init__(message)
        self.code = code
        self.span = span


def dialect_regex(regex: str) -> str:
    """An RE2 regex spelled so the Rust `regex` crate reads it the same:
    Perl classes become the ASCII sets RE2 defines them as. Raises
    Unlayable (MP751) for what has no such spelling."""
    ascii_sets = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
    out, i, in_set, set_start = [], 0, False, False
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            e = regex[i + 1]
            if e in "dws":
                out.append(ascii_sets[e] if in_set else f"[{ascii_sets[e]}]")
            elif e in "DWS":
                if in_set:
                    raise Unlayable("MP751", f"`\\{e}` inside a character set has no ASCII spelling there")
                out.append(f"[^{ascii_sets[e.lower()]}]")
            elif e in "bB":
                raise Unlayable("MP751", f"`\\{e}` (a word boundary)")
            elif e in "QEC0123456789":  # RE2 only: quoting, any byte, octal
                raise Unlayable("MP751", f"`\\{e}`, which the regex crate does not have")
            else:
                out.append(regex[i:i + 2])
            i += 2
            continue
        if in_set:
            if c == "[" and regex.startswith("[:", i):
                end = regex.find(":]", i + 2)
                if end > 0:  # a POSIX class such as [:digit:]: ASCII in both dialects
                    out.append(regex[i:end + 2])
                    i = end + 2
                    set_start = False
                    continue
            if c == "]" and not set_start:
                in_set = False
            set_start = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_set = True
            out.append(c)
            i += 1
            if i < len(regex) and regex[i] == "^":
                out.append("^")
                i += 1
            set_start = True  # a `]` first in a set is a literal
            continue
        out.append(c)
        i += 1
    return "".join(out)


def path_match(key: tuple[str, str]) -> dict | None:
    """A whole-path Linkerd match for one pattern, holding only for
    normalized paths (normal_paths.py); never a PathPrefix: its length ranks
    below a whole-path match, and it matches path segments, not the policy's
    string prefix. None: no normalized path matches the pattern. Raises
    NotLayable (MP750) or Unlayable (MP751)."""
    kind, value = key
    if kind == "exact":
        return {"type": "Exact", "value": value}
    if kind in ("prefix", "glob"):
        rx = normal_paths.pattern_regex(kind, value)
        return None if rx is None else {"type": "RegularExpression", "value": rx}
    rx = anchored(dialect_regex(value))
    outside = normal_paths.regex_is_normal(value)
    if outside is not None:
        raise Unlayable("MP751", f"a path that is not normalized (`{outside}`), which Linkerd would match as sent")
    return {"type": "RegularExpression", "value": rx}


@dataclass
class _IdentityIndex:
    services: dict[tuple[str, str], list[str]]  # identity -> the services presenting it
    by_namespace: dict[str, list[tuple[str, str]]]
    everyone: frozenset = frozenset()  # every identity, and in sorted order: built once, not per destination
    in_order: tuple = ()


_INDEX: dict[int, tuple[object, _IdentityIndex]] = {}


def _identity_index(plan) -> _IdentityIndex:
    """Per plan, once (a compile asks for every route-scoped destination)."""
    got = _INDEX.get(id(plan))
    if got is None or got[0] is not plan:
        services: dict[tuple[str, str], list[str]] = {}
        for p in plan.services.values():
            services.setdefault((p.identity.namespace, p.identity.account), []).append(p.name)
        by_ns: dict[str, list[tuple[str, str]]] = {}
        for ident in services:
            by_ns.setdefault(ident[0], []).append(ident)
        _INDEX.clear()
        got = _INDEX[id(plan)] = (plan, _IdentityIndex(services, by_ns, frozenset(services), tuple(sorted(services))))
    return got[1]


class Classes:
    """The cells of one destination and their layout (see the module doc)."""

    def __init__(self, mesh: Mesh, plan, sp: ServicePlan):
        self.mesh = mesh
        self.plan = plan
        self.sp = sp
        self.rules: list[AuthRule] = mesh.rules_by_target.get(sp.name, [])
        named = {m for r in self.rules for m in r.methods}
        self.methods = [m for m in HTTP_METHODS if m in named]
        # a method no rule names stands for all of them (an extension method if the rules name every standard one)
        self.other = next((m for m in HTTP_METHODS if m not in named), "PROPFIND")
        self.keys = list(dict.fromkeys((p.kind, p.value) for r in self.rules for p in r.paths))
        self.stems = {k: st for k in self.keys if (st := _stem(k)) is not None}
        self.caller_classes = self._caller_classes()

    def _caller_classes(self) -> list[tuple[str, frozenset[tuple[str, str]]]]:
        """(a representative service, the identities) per class of mesh
        identities that the destination's rules cannot tell apart: those
        matching the same rule sources (a service's identity, a namespace's
        identities; `authenticated` and `*` match them all). Asking the
        reference evaluator once per class, not once per identity, keeps a
        1000-service mesh in budget; the representative stands for its class
        exactly as in the verifier's partition (verify/partition.py)."""
        index = _identity_index(self.plan)
        keys: dict[tuple[str, str], set] = {}
        for r in self.rules:
            for j, src in enumerate(r.sources):
                if src.kind == "service":
                    ident = self.plan.service(src.name).identity
                    found = [(ident.namespace, ident.account)]
                elif src.kind == "namespace":
                    found = index.by_namespace.get(src.name, [])
                else:
                    continue
                for ident in found:
                    keys.setdefault(ident, set()).add((r.index, j))
        groups: dict[frozenset, list] = {}
        for ident, key in keys.items():
            groups.setdefault(frozenset(key), []).append(ident)
        out = [(index.services[g[0]][0], frozenset(g)) for g in groups.values()]
        if len(keys) < len(index.services):  # the identities no source names: one class
            rest = index.everyone.difference(keys)
            first = next(i for i in index.in_order if i not in keys)  # the least of rest, without sorting it
            out.append((index.services[first][0], rest))
        return out

    def atoms(self):
        """The rules' atoms, with the root `/` and each subtree's stem (see
        `_stem`) split off: a whole-path match on them ties with the
        catch-all or the subtree's PathPrefix on length, so they must be
        atoms of their own for `_winners` to be exact on a witness."""
        from ...verify.atoms import Undecided, Unsupported, split

        extra = [ROOT] + [("exact", p) for p in self.stems.values()]
        try:
            return split(self.keys + extra, "path")
        except (Unsupported, Undecided) as exc:
            raise Unlayable("MP750", f"its path patterns cannot be split into classes exactly ({exc})") from None

    def _applies(self, r: AuthRule, method: str, members: frozenset) -> bool:
        return (not r.methods or method in r.methods) and (not r.paths or any((p.kind, p.value) in members
                                                                                for p in r.paths))

    def admitted(self, method: str, witness: str, members: frozenset) -> Admitted:
        """A cell's callers, by the reference evaluator on the atom's witness."""
        dest = self.sp.name
        ids = frozenset(i for i, (rep, _ids) in enumerate(self.caller_classes)
                        if authorize(self.mesh, Request(rep, dest, method, witness)).allowed)
        unauth = authorize(self.mesh, Request(None, dest, method, witness)).allowed
        # An identity the mesh does not know: admitted by an allow for
        # `authenticated` or `*` (or the default), refused by such a deny.
        applying = [r for r in self.rules if self._applies(r, method, members)]
        broad = lambda r: any(s.kind in ("any", "authenticated") for s in r.sources)  # noqa: E731
        if any(r.effect == "deny" and broad(r) for r in applying):
            strangers = False
        else:
            strangers = any(r.effect == "allow" and broad(r) for r in applying) or self.mesh.settings.default == "allow"
        return Admitted(ids, strangers and self.sp.mtls != "off", unauth)

    def layout(self) -> Layout:
        atoms = self.atoms()
        tiers = [(OTHER, self.other)] + [(m, m) for m in self.methods]
        cell = {(t, i): self.admitted(method, a.witness, a.members)
                for t, method in tiers for i, a in enumerate(atoms)}
        d0 = cell[(OTHER, next(i for i, a in enumerate(atoms) if ROOT in a.members))]
        emitted: list[tuple[str | None, str, tuple[str, str], Admitted]] = []
        whole_keys = list(dict.fromkeys(self.keys + [("exact", p) for p in self.stems.values()] + [ROOT]))

        def right(t, i) -> bool:
            return _winners(emitted, d0, t, atoms[i]) == {cell[(t, i)]}

        stems = {("exact", st) for st in self.stems.values()}

        def uniform(t, k):
            got = {cell[(t, i)] for i, a in enumerate(atoms) if k in a.members}
            return got.pop() if len(got) == 1 else None

        for t, _method in tiers:
            for _round in range(3):
                changed = False
                # whole-path matches: a pattern all of whose atoms have one class
                for k in whole_keys:
                    x = uniform(t, k)
                    if x is not None and not all(right(t, i) for i, a in enumerate(atoms) if k in a.members):
                        emitted.append((t, "whole", k, x))
                        changed = True
                # a subtree's PathPrefix, shorter first: it ranks below every
                # whole-path match, so it can hold the class of the subtree's
                # paths they leave; what it would get wrong must be fixable by
                # a whole-path match (not the stem's: it would tie)
                for k, stem in sorted(self.stems.items(), key=lambda kv: len(kv[1])):
                    inside = [i for i, a in enumerate(atoms) if k in a.members or ("exact", stem) in a.members]
                    wrong = [i for i in inside if not right(t, i)]
                    got = {cell[(t, i)] for i in wrong}
                    if len(got) != 1:
                        continue
                    emitted.append((t, "prefix", ("exact", stem), got.pop()))
                    broken = [i for i in inside if not right(t, i) and i not in wrong]
                    if all(not right(t, i) for i in wrong) or not all(
                            any(k2 not in stems and k2 != ROOT and uniform(t, k2) == cell[(t, i)]
                                for k2 in atoms[i].members) for i in broken):
                        emitted.pop()
                    else:
                        changed = True
                if not changed:
                    break
        for t, _method in tiers:
            for i, a in enumerate(atoms):
                if not right(t, i):
                    raise Unlayable("MP750", _overlap(t, a.witness, [k for k in self.keys if k in a.members]))
        order: list[Admitted] = []
        matches: dict[Admitted, list] = {}
        for t, kind, k, x in emitted:
            if x not in matches:
                matches[x] = []
                order.append(x)
            matches[x].append((t, kind, k))
        return Layout(d0, matches.get(d0, []), [(x, matches[x]) for x in order if x != d0])


ROOT = ("exact", "/")


@lru_cache(maxsize=4096)
def _stem(key: tuple[str, str]) -> str | None:
    """P for a pattern matching the normalized paths below P (`P/**`, or
    the string prefix `P/`): a Linkerd PathPrefix P matches those, and P."""
    from ...verify.atoms import is_normalized

    kind, value = key
    if kind == "glob" and value.endswith("/**") and "*" not in value[:-3]:
        stem = value[:-3]
    elif kind == "prefix" and value.endswith("/"):
        stem = value[:-1]
    else:
        return None
    return stem if stem and is_normalized(stem) else None


def _winners(emitted, d0, tier, atom) -> set:
    """The classes of the best matches Linkerd finds for a request of the
    tier on the atom's paths: longest path match (a whole-path match counts
    the path, a PathPrefix its prefix, the catch-all 1), then a method. More
    than one class: the route would be picked by creation time. Exact on a
    witness: `/` and every stem are atoms of their own, and every other path
    of an atom is longer than any prefix that holds on it."""
    n = len(atom.witness.encode())
    best, found = (1, False), {d0}
    for t, kind, k, x in emitted:
        if t is not OTHER and t != tier:
            continue
        if k not in atom.members and not (kind == "prefix" and any(
                m[0] != "exact" and _stem(m) == k[1] for m in atom.members)):
            continue
        rank = (n if kind == "whole" else len(k[1].encode()), t is not OTHER)
        if rank > best:
            best, found = rank, {x}
        elif rank == best:
            found.add(x)
    return found


def _overlap(tier: str | None, witness: str, keys: list[tuple[str, str]]) -> str:
    method = f"{tier} " if tier else ""
    pats = ", ".join(f"`{v}`" for _k, v in keys) or "no pattern"
    return (f"a request like `{method}{witness}` (matched by {pats}) is authorized differently from other "
            "requests its patterns match, where they overlap other patterns; Linkerd ranks whole-path "
            "matches alike and would choose between overlapping routes by creation time")


def route_documents(auth, sp: ServicePlan) -> list[dict]:
    """The inbound routes, authorizations and authentications of a
    route-scoped destination (`auth` is policy.Authorizations, which keeps
    the findings and the namespaces needing the all-networks authentication)."""
    svc = sp.service
    span = next((r.span for r in auth.mesh.rules_by_target.get(sp.name, []) if r.methods or r.paths), svc.at("name"))
    tcp = [p for p in svc.ports if p.protocol == "tcp"]
    if tcp:
        auth.reject(f"methods or paths in the rules for `{svc.name}` on its tcp port {tcp[0].number}", span,
                    "an opaque Server has no HTTP routes")
        return []
    odd = next((r for r in auth.mesh.rules_by_target.get(sp.name, []) if set(r.methods) - set(HTTP_METHODS)), None)
    if odd is not None:  # (MP105 says so first; never mistaken for "any other method")
        auth.reject(f"the method {sorted(set(odd.methods) - set(HTTP_METHODS))[0]} of a rule for `{svc.name}`",
                    odd.span, "a Linkerd route matches the standard methods only")
        return []
    written: dict[tuple[str, str], dict | None] = {}
    for r in auth.mesh.rules_by_target.get(sp.name, []):
        for p in r.paths:
            try:
                written[(p.kind, p.value)] = path_match((p.kind, p.value))
            except Unlayable as exc:
                auth.diags.append(diag("MP751", f"the path regex `{p.value}` in the rules for `{svc.name}` "
                                                f"matches {exc}" if "normalized" in str(exc) else
                                                f"the path regex `{p.value}` in the rules for `{svc.name}` "
                                                f"uses {exc}, which Linkerd's proxy (the Rust regex crate) "
                                                "reads differently from RE2", p.span or r.span))
                return []
            except normal_paths.NotLayable as exc:
                auth.diags.append(diag("MP750", f"the linkerd target cannot lay out the authorization of "
                                                f"`{svc.name}` as Linkerd routes: {exc}", p.span or r.span))
                return []
    try:
        classes_of = Classes(auth.mesh, auth.plan, sp)
        lay = classes_of.layout()
    except Unlayable as exc:
        auth.diags.append(diag(exc.code, f"the linkerd target cannot lay out the authorization of `{svc.name}` "
                                         f"as Linkerd routes: {exc}", exc.span or span))
        return []
    every = frozenset(range(len(classes_of.caller_classes)))
    classes = [(lay.default, lay.default_matches)] + lay.classes
    docs: list[dict] = []
    refs = []
    for i, (adm, _m) in enumerate(classes):
        name = f"{svc.name}-{'default' if i == 0 else f'class-{i}'}"
        got = _authentication(auth, sp, adm, name, classes_of.caller_classes, every, span)
        if got is False:
            return []
        ref, extra = got if got is not None else (None, [])
        docs += extra
        refs.append((name, ref))
    for p in svc.ports:
        server = f"{svc.name}-{p.number}"
        for (name, ref), (_adm, matches) in zip(refs, classes):
            route = f"{server}-{name[len(svc.name) + 1:]}"
            rules = _rules(matches, written, catch_all=name.endswith("-default"))
            if rules is None:
                auth.diags.append(diag("MP750", f"the linkerd target cannot lay out the authorization of "
                                                f"`{svc.name}` as Linkerd routes: one class needs "
                                                f"{len(matches)} matches, more than a route holds "
                                                f"({MAX_RULES * MAX_MATCHES})", span))
                return []
            docs.append({
                "apiVersion": f"{POLICY}/v1beta3", "kind": "HTTPRoute",
                "metadata": {"name": route, "namespace": svc.namespace},
                "spec": {"parentRefs": [{"group": POLICY, "kind": "Server", "name": server}], "rules": rules},
            })
            if ref is not None:
                docs.append({
                    "apiVersion": f"{POLICY}/v1alpha1", "kind": "AuthorizationPolicy",
                    "metadata": {"name": route, "namespace": svc.namespace},
                    "spec": {"targetRef": {"group": POLICY, "kind": "HTTPRoute", "name": route},
                             "requiredAuthenticationRefs": [ref]},
                })
        # Paths the policy would normalize or refuse: a route nobody is
        # authorized on, so Linkerd refuses them (normal_paths.py). A
        # one-character path (`OPTIONS *`) ties with the catch-all on length:
        # a method outranks it.
        rx = {"type": "RegularExpression", "value": normal_paths.UNNORMALIZED}
        ms = [{"path": rx}] + [{"path": rx, "method": m} for m in HTTP_METHODS]
        docs.append({
            "apiVersion": f"{POLICY}/v1beta3", "kind": "HTTPRoute",
            "metadata": {"name": f"{server}-unnormalized", "namespace": svc.namespace},
            "spec": {"parentRefs": [{"group": POLICY, "kind": "Server", "name": server}],
                     "rules": [{"matches": ms[i:i + MAX_MATCHES]} for i in range(0, len(ms), MAX_MATCHES)]},
        })
    return docs


def _rules(matches, written: dict, catch_all: bool) -> list[dict] | None:
    ms = [{"path": {"type": "PathPrefix", "value": "/"}}] if catch_all else []  # every request, ranked lowest
    for method, kind, key in matches:
        if kind == "prefix":
            path = {"type": "PathPrefix", "value": key[1]}
        else:
            if key not in written:
                written[key] = path_match(key)  # a stem or the root: exact
            path = written[key]
            assert path is not None, (key, "a pattern with normalized paths in its class has a match")
        one: dict = {"path": path}
        if method is not None:
            one["method"] = method
        ms.append(one)
    chunks = [ms[i:i + MAX_MATCHES] for i in range(0, len(ms), MAX_MATCHES)]
    if len(chunks) > MAX_RULES:
        return None
    return [{"matches": c} for c in chunks]


def _authentication(auth, sp: ServicePlan, adm: Admitted, name: str, callers, every, span):
    """(ref, documents) for a class; None: nobody is admitted (no
    AuthorizationPolicy: Linkerd refuses the route); False after a finding."""
    svc = sp.service
    if adm.unauthenticated:
        if not (adm.strangers and adm.classes == every):
            auth.reject(f"the authorization of `{svc.name}` for callers without an identity next to a deny", span,
                        "callers without an identity are allowed by address, which cannot leave denied "
                        "identities out")
            return False
        auth.network_namespaces.add(svc.namespace)
        return {"group": POLICY, "kind": "NetworkAuthentication", "name": "all-networks"}, []
    if adm.classes == every and adm.strangers:
        spec: dict = {"identities": ["*"]}
    elif adm.classes:
        # identities the mesh does not know are left out when some mesh identity is
        # (a MeshTLSAuthentication cannot say "all but"), as for server-wide rules
        ids = sorted(set().union(*[callers[i][1] for i in adm.classes]))
        spec = {"identityRefs": [{"kind": "ServiceAccount", "name": a, "namespace": ns} for ns, a in ids]}
    elif adm.strangers:
        auth.reject(f"the authorization of `{svc.name}` for identities outside the mesh only", span,
                    "a MeshTLSAuthentication cannot name every identity but the mesh's own")
        return False
    else:
        return None
    doc = {"apiVersion": f"{POLICY}/v1alpha1", "kind": "MeshTLSAuthentication",
           "metadata": {"name": name, "namespace": svc.namespace}, "spec": spec}
    return {"group": POLICY, "kind": "MeshTLSAuthentication", "name": name}, [doc]
