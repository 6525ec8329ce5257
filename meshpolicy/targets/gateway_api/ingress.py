"""Ingress gateways (mesh = "istio") as a Gateway API Gateway and an
HTTPRoute whose parentRef is that Gateway (docs/targets/gateway-api.md,
"North-south").

- Gateway: class `istio`, deployed manually as the istio target's
  ingress is (Istio's gateway Helm chart installed under the ingress's
  name, its pods labelled `app: <ingress>` and running as the ingress's
  account, whose identity the `internet` rules name): `addresses` is that
  release's Service, so Istio programs those pods instead of deploying
  its own (whose account would be `<ingress>-istio`). One listener per
  `listen`; an https listener terminates TLS with the Secret
  `<ingress>-tls-<port>` (the istio target's name), which the user creates
  from the cert and key files: meshc never copies key material into its
  output. Hosts are the HTTPRoute's `hostnames` (exact, or `*.suffix` for
  one label or more, as the policy's); another host matches no route: 404.
- The meaning of an ingress rule that forwards: the routed service's own
  route then applies. Istio's gateway applies only the routes attached to
  the Gateway, never the Service's GAMMA route (a Service-parented
  HTTPRoute configures the mesh's sidecars; GAMMA leaves gateways open,
  kubernetes-sigs/gateway-api#1478, and Istio's gateway routes straight to
  the backend's endpoints), and the callee's sidecar does not route again.
  So each ingress rule is MERGED with the service's route exactly as the
  istio target merges it (istio/ingress.py `merged_rules`: one rule per
  ingress rule x route rule, match, rewrite and header operations
  composed), and each merged rule is written as an HTTPRoute rule here.
- First match: the HTTPRoute prefers the more specific match; the merged
  rules are laid out for Istio's order (http_routes.istio_layout) and what
  is left is checked (order_problems): MP701, never a silent reorder.
- A request the ingress rule matches but the service's route does not
  (the route has no catch-all) is 404 in the policy: it is left out (an
  HTTPRoute answers 404 where no rule matches) when no later rule could
  take it, else MP701. `respond` (no direct response in the standard
  channel) and a split across services with routes of their own are MP701.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import re2

from ...model.types import Ingress, RouteRule, Service
from ...plan import ServicePlan, ingress_settings, plan_of
from ..http_routes import (MAX_ROUTE_MATCHES, MAX_RULES, Dialect, _disjoint, backend_refs, duration, http_matches,
                           istio_layout, mirror_filter, order_problems, redirect_filter)
from ..istio.context import Lowering
from ..istio.ingress import credential_name, merged_header_ops, merged_rewrite, merged_rules
from . import l7

API = "gateway.networking.k8s.io/v1"
GRANT_API = "gateway.networking.k8s.io/v1beta1"
GATEWAY_CLASS = "istio"


def gateway(g: Ingress) -> dict:
    listeners = []
    for ls in g.listeners:
        one: dict = {"name": f"{ls.protocol}-{ls.port}", "port": ls.port, "protocol": ls.protocol.upper()}
        if ls.protocol == "https":
            one["tls"] = {"mode": "Terminate",
                          "certificateRefs": [{"kind": "Secret", "name": credential_name(g, ls.port)}]}
        listeners.append(one)
    address = {"type": "Hostname", "value": f"{g.name}.{g.namespace}.svc.cluster.local"}
    return {"apiVersion": API, "kind": "Gateway", "metadata": {"name": g.name, "namespace": g.namespace},
            "spec": {"gatewayClassName": GATEWAY_CLASS, "addresses": [address], "listeners": listeners}}


@dataclass
class _Entry:
    """One HTTPRoute rule in the making, with the ingress rule it comes from."""

    ingress_rule: RouteRule
    body: dict
    no_route: bool = False  # a 404 of the service's route: left out if nothing later can take it
    stem: str | None = None  # written as PathPrefix `stem/` with ReplacePrefixMatch (see _glob_prefix)
    shadow_of: "_Entry | None" = None  # a later rule's copy for the exact path `stem` of this entry
    copied_for: set = field(default_factory=set)  # stems this entry has a copy for (taking its requests there)
    index: int = 0
    span: object = None

    def __post_init__(self):
        self.index, self.span = self.ingress_rule.index, self.ingress_rule.span


@dataclass
class _Route:
    lw: Lowering
    d: Dialect
    g: Ingress
    entries: list[_Entry] = field(default_factory=list)
    backends: dict[str, set[str]] = field(default_factory=dict)  # namespace -> Services named
    ok: bool = True

    def reject(self, construct: str, span, why: str) -> None:
        self.d.reject(construct, span, why)
        self.ok = False

    def port_of(self, svc: Service, where: str, span) -> int | None:
        ports = [p.number for p in svc.ports if p.protocol in ("http", "http2")]
        if len(ports) != 1:
            self.reject(f"forwarding to `{svc.name}` {where}", span,
                        "a backendRef names one port, and the service has "
                        + ("no HTTP port" if not ports else "several HTTP ports"))
            return None
        return ports[0]

    def refs(self, svc: Service, refs: list[dict]) -> list[dict]:
        for ref in refs:
            self.backends.setdefault(svc.namespace, set()).add(ref["name"])
            if svc.namespace != self.g.namespace:
                ref["namespace"] = svc.namespace
        return refs


def _matches(r: _Route, match, where: str) -> list[dict] | None:
    ms = http_matches(SimpleNamespace(match=match), r.d, where)
    if ms is None:
        return None
    if match.queries:
        qp = l7.query_params(match.queries, r.d, where)
        if qp is None:
            return None
        ms = [{**x, "queryParams": qp} for x in (ms or [{}])]
    return ms


def _rewrite_filter(r: _Route, rw, host: str | None, matches: list[dict], where: str, span) -> dict | None | bool:
    body: dict = {}
    if rw is not None:
        paths = [m.get("path") for m in matches]
        if rw.whole:
            body["path"] = {"type": "ReplaceFullPath", "replaceFullPath": rw.to}
        elif paths and all(p is not None and p["type"] == "Exact" for p in paths) \
                and len({rw.to + p["value"][len(rw.fixed):] for p in paths}) == 1:
            body["path"] = {"type": "ReplaceFullPath", "replaceFullPath": rw.to + paths[0]["value"][len(rw.fixed):]}
        elif len(matches) == 1 and paths[0] == {"type": "PathPrefix", "value": "/"} and rw.fixed == "/" \
                and rw.to.endswith("/"):
            body["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": rw.to}
        else:
            r.reject(f"the rewrite of `{rw.fixed}` to `{rw.to}` {where}", span,
                     "only a whole path (an exact match or no path test) or the prefix `/` of a single match, "
                     "replaced by a path ending in `/`, can be written: ReplacePrefixMatch needs one PathPrefix "
                     "match, which matches whole segments, and the policy's other prefixes and globs are "
                     "RegularExpression matches")
            return False
    if host is not None:
        body["hostname"] = host
    return {"type": "URLRewrite", "urlRewrite": body} if body else None


def _merged(r: _Route, ir: RouteRule, svc: Service, sp: ServicePlan, port: int, where: str) -> None:
    """The ingress rule merged with svc's route (istio/ingress.py)."""
    for m in merged_rules(r.lw, r.g, ir, svc, where, "one HTTPRoute match holds one path, one test per header "
                                                      "and per query parameter; the ingress rule and the service's "
                                                      "route rule must fit in it"):
        if m is None:
            r.ok = False
            return
        matches = _matches(r, m.match, where)
        if matches is None:
            r.ok = False
            continue
        body: dict = {"matches": matches} if matches else {}
        if m.route_rule == "no-route":
            r.entries.append(_Entry(ir, body, no_route=True))
            continue
        rule = m.rule
        rp = next((p for p in sp.rule_plans if p.rule is rule), None)
        if rp is None:
            continue
        span = rule.span if rule is not None else ir.span
        inner = f"{where} (with rule {rule.index + 1} of route `{svc.name}`)" if rule is not None else where
        if rp.kind == "redirect":
            f = redirect_filter(rule.action.uri, rule.action.status, r.d, rule.action.span, inner)
            if f is None:
                r.ok = False
                continue
            body["filters"] = [f]
            r.entries.append(_Entry(ir, body))
            continue
        if rp.kind == "respond":
            r.reject(f"`respond` {inner}", rule.action.span, "the standard channel has no direct response")
            continue
        refs = backend_refs(sp, rp.weights, port, r.d, span, inner)
        if refs is None:
            r.ok = False
            continue
        body["backendRefs"] = r.refs(svc, refs)
        timeout, retry, fault = ingress_settings(ir, svc, rule)
        if retry is not None and retry.attempts > 0 and not r.d.drop(
                "retry", f"`retry` {inner}", retry.span, "retries are not in the standard channel"):
            r.ok = False
            continue
        if fault is not None:
            key = "fault-delay" if fault.delay_ms is not None else "fault-abort"
            if not r.d.drop(key, f"`fault` {inner}", fault.span, "fault injection is not in the standard channel"):
                r.ok = False
                continue
        if timeout is not None:
            body["timeouts"] = {"request": duration(timeout)}
        filters = l7.header_filters(merged_header_ops(ir, rule), r.d, inner)
        if filters is None:
            r.ok = False
            continue
        rw, host = merged_rewrite(ir, m)
        stem = _glob_prefix(m.match, rw, matches)
        if stem is not None:
            f = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                               "replacePrefixMatch": rw.to},
                                                      **({"hostname": host} if host is not None else {})}}
        else:
            f = _rewrite_filter(r, rw, host, matches, inner, ir.rewrite.span if ir.rewrite else span)
        if f is False:
            continue
        if f is not None:
            filters.append(f)
        if rp.mirror is not None:
            mf = mirror_filter(sp, rp.mirror, port)
            r.refs(svc, [mf["requestMirror"]["backendRef"]])
            filters.append(mf)
        c = ir.cors or svc.cors_for(rule)
        if c is not None:
            cf = l7.cors_filter(c, r.d, inner)
            if cf is None:
                r.ok = False
                continue
            filters.append(cf)
        if filters:
            body["filters"] = filters
        r.entries.append(_Entry(ir, body, stem=stem))


def _glob_prefix(match, rw, matches: list[dict]) -> str | None:
    """The stem P when a rewrite of the glob `P/**` (fixed part `P/`) to a
    path ending in `/` can be a ReplacePrefixMatch on the PathPrefix `P/`:
    Gateway API then turns `P/rest` into `to` + `rest`, as the policy does
    (`P/` into `to`). The PathPrefix also matches the path `P` itself, which
    the glob does not: _shadows gives that path to the later rules."""
    if rw is None or rw.whole or not rw.to.endswith("/") or len(match.paths) != 1 or len(matches) != 1:
        return None
    pat = match.paths[0]
    if pat.kind != "glob" or not pat.value.endswith("/**"):
        return None
    stem = pat.value[:-3]
    if not stem or "*" in stem or rw.fixed != stem + "/":
        return None
    return stem


def _admits(path: dict | None, value: str) -> bool:
    if path is None:
        return True
    if path["type"] == "Exact":
        return path["value"] == value
    if path["type"] == "PathPrefix":
        pre = path["value"].rstrip("/")
        return not pre or value == pre or value.startswith(pre + "/")
    return re2.fullmatch(path["value"], value) is not None


def _no_more_than(s: dict, e: dict) -> bool:
    """Match s (without its path) holds wherever match e does."""
    return s.get("method") in (None, e.get("method")) \
        and all(h in e.get("headers", []) for h in s.get("headers", [])) \
        and all(q in e.get("queryParams", []) for q in s.get("queryParams", []))


def _shadows(r: _Route, entries: list[_Entry], no_routes: list[_Entry]) -> list[_Entry] | None:
    """The entries with, after each later rule's entry, its copy for the
    exact path P of every PathPrefix `P/` entry before it (an Exact path
    outranks the PathPrefix), so the path P goes where the policy sends it;
    None after MP701 (some request for P would stay with the prefix entry)."""
    out = list(entries)
    for e in entries:
        if e.stem is None:
            continue
        em = e.body["matches"][0]
        copies: list[tuple[_Entry, _Entry]] = []
        for later in entries:
            if later.index <= e.index:
                continue
            ms = [{**m, "path": {"type": "Exact", "value": e.stem}} for m in later.body.get("matches") or [{}]
                  if _admits(m.get("path"), e.stem) and not _disjoint(m, em)]
            if not ms:
                continue
            if later.stem is not None:
                ms = []  # its ReplacePrefixMatch needs its PathPrefix: not copied
            if not ms:
                r.reject(f"the path `{e.stem}` in rule {e.index + 1} of ingress `{r.g.name}`", e.span,
                         f"its PathPrefix also matches `{e.stem}`, which rule {later.index + 1} takes in the policy "
                         "and which cannot be copied ahead of it")
                return None
            copies.append((later, _Entry(later.ingress_rule, {**later.body, "matches": ms}, shadow_of=e)))
        blocking = [n for n in no_routes if n.index > e.index
                    and any(_admits(m.get("path"), e.stem) and not _disjoint(m, em)
                            for m in n.body.get("matches") or [{}])]
        covered = any(_no_more_than(m, em) for _, c in copies for m in c.body["matches"])
        if blocking or not covered:
            r.reject(f"the path `{e.stem}` in rule {e.index + 1} of ingress `{r.g.name}`", e.span,
                     f"the PathPrefix `{e.stem}/` that its rewrite needs also matches `{e.stem}`, which the glob "
                     "does not, and no later rule takes every such request (without a direct response the "
                     "HTTPRoute cannot answer 404 for it)")
            return None
        for later, copy in copies:
            at = out.index(later) + 1
            while at < len(out) and out[at].shadow_of is not None:
                if out[at].body == copy.body:
                    break  # the same copy, made for another entry of this path
                at += 1
            else:
                out.insert(at, copy)
            later.copied_for.add(e.stem)
    for e in out:
        if e.stem is not None:
            e.body["matches"] = [{**e.body["matches"][0], "path": {"type": "PathPrefix", "value": e.stem + "/"}}]
    return out


def _split(r: _Route, ir: RouteRule, names: list[str], where: str) -> None:
    """A split across services, each without a route of its own (the share
    goes to the Service, every pod, as the istio target sends it)."""
    from ...semantics.evaluate import forward_weights

    weights = forward_weights(ir)
    refs = []
    for name in names:
        svc = r.lw.mesh.service(name)
        if svc is None:
            return
        if name in r.lw.mesh.route_map:
            r.reject(f"the split across services {where}", ir.action.span,
                     f"`{name}` has a route of its own, which a split at the gateway cannot apply to its share")
            return
        port = r.port_of(svc, where, ir.action.span)
        if port is None:
            return
        if weights[name] != int(weights[name]):
            r.reject(f"the share {weights[name]:g}% of `{name}` {where}", ir.action.span, "weights are integers")
            return
        refs += r.refs(svc, [{"name": name, "port": port, "weight": int(weights[name])}])
    matches = _matches(r, ir.match, where)
    if matches is None:
        r.ok = False
        return
    if ir.headers or ir.rewrite is not None or ir.cors is not None or ir.action.mirror is not None:
        r.reject(f"the L7 options of the split {where}", ir.span,
                 "meshc writes a split across services without header operations, rewrite, CORS or mirror")
        return
    body: dict = {"matches": matches} if matches else {}
    body["backendRefs"] = refs
    r.entries.append(_Entry(ir, body))


def _covered(r: _Route, n: _Entry, later: _Entry) -> bool:
    """Every request both the left-out 404 entry `n` (of ingress rule i)
    and `later` match is taken by an earlier entry of the same ingress rule
    that holds exactly the ingress rule's paths and a subset of later's
    other tests (so `later` never sees one of n's requests)."""
    for a, b in ((x, y) for x in n.body.get("matches") or [{}] for y in later.body.get("matches") or [{}]):
        if _disjoint(a, b):
            continue
        ok = False
        for e in r.entries:
            if e is n or e.ingress_rule is not n.ingress_rule or e.no_route:
                continue
            for em in e.body.get("matches") or [{}]:
                if em.get("path") == a.get("path") and em.get("method") in (None, b.get("method"), a.get("method")) \
                        and all(h in b.get("headers", []) + a.get("headers", []) for h in em.get("headers", [])) \
                        and not em.get("queryParams"):
                    ok = True
        if not ok:
            return False
    return True


def http_route(lw: Lowering, d: Dialect, g: Ingress) -> list[dict] | None:
    """The ingress's HTTPRoute and the ReferenceGrants its backends need
    ([] when it has no rule to write: the Gateway answers 404); None after
    an MP701."""
    r = _Route(lw, d, g)
    plan = plan_of(lw.mesh)
    for ir in g.rules:
        where = f"in rule {ir.index + 1} of ingress `{g.name}`"
        a = ir.action
        if a.kind == "respond":
            r.reject(f"`respond` {where}", a.span, "the standard channel has no direct response")
            continue
        if a.kind == "redirect":
            matches = _matches(r, ir.match, where)
            f = redirect_filter(a.uri, a.status, d, a.span, where)
            if matches is None or f is None:
                r.ok = False
                continue
            r.entries.append(_Entry(ir, {**({"matches": matches} if matches else {}), "filters": [f]}))
            continue
        if a.mirror is not None:
            r.reject(f"`mirror` {where}", a.mirror.span, "meshc writes no mirror of an ingress rule to this target")
            continue
        names = list(dict.fromkeys(x.version.name for x in a.destinations))
        if len(names) > 1:
            _split(r, ir, names, where)
            continue
        svc = lw.mesh.service(names[0])
        sp = plan.service(names[0])
        if svc is None or sp is None:
            continue  # the checker reports it
        port = r.port_of(svc, where, a.span)
        if port is not None:
            _merged(r, ir, svc, sp, port, where)
    entries = [e for e in r.entries if not e.no_route]
    for n in (e for e in r.entries if e.no_route and r.ok):
        later = [e for e in entries if e.index > n.index]
        blocking = [e for e in later if not _covered(r, n, e)]
        if blocking:
            r.reject(f"the requests rule {n.index + 1} of ingress `{g.name}` forwards that the route of the "
                     f"service finds no rule for", n.span,
                     f"they are 404 in the policy, and without a direct response rule {blocking[0].index + 1} "
                     "could take them")
    if not r.ok:
        return None
    entries = _shadows(r, entries, [e for e in r.entries if e.no_route])
    if entries is None:
        return None
    pairs = istio_layout([(e, e.body) for e in entries])
    for earlier, later_e in order_problems(pairs, True) + l7.query_order_problems(pairs, True):
        if later_e.shadow_of is not None and (earlier.stem == later_e.shadow_of.stem
                                              or later_e.shadow_of.stem in earlier.copied_for):
            # the copy takes the exact path from the prefix entries, and from
            # an earlier entry whose own copy (checked against it) takes it first
            continue
        r.reject(f"the order of rules {earlier.index + 1} and {later_e.index + 1} of ingress `{g.name}`",
                 later_e.span, "a request both match would go by the later rule: routes prefer the more specific "
                               "match (exact path, longer prefix, a method, more headers and query tests), "
                               "not the first")
    for e in entries:
        ms = e.body.get("matches") or []
        if e.stem is not None and not (len(ms) == 1 and ms[0]["path"]["type"] == "PathPrefix"):
            r.reject(f"the rewrite in rule {e.index + 1} of ingress `{g.name}`", e.span,
                     "laid out for Istio's order of matches its PathPrefix would become a regular expression "
                     "or gain matches, and ReplacePrefixMatch needs exactly one PathPrefix match")
    rules = [e.body for e in entries]
    if len(rules) > MAX_RULES or sum(len(x.get("matches", [])) for x in rules) > MAX_ROUTE_MATCHES:
        r.reject(f"the {len(rules)} HTTPRoute rules of ingress `{g.name}`", g.span,
                 f"an HTTPRoute holds at most {MAX_RULES} rules and {MAX_ROUTE_MATCHES} matches")
    if not r.ok:
        return None
    if not rules:
        return []
    for n, body in enumerate(rules, 1):
        body["name"] = f"ingress-{n}"
    spec: dict = {"parentRefs": [{"name": g.name}]}
    if g.hosts:
        spec["hostnames"] = list(g.hosts)
    spec["rules"] = rules
    docs = [{"apiVersion": API, "kind": "HTTPRoute", "metadata": {"name": g.name, "namespace": g.namespace},
             "spec": spec}]
    for ns, names in sorted(r.backends.items()):
        if ns == g.namespace:
            continue
        docs.append({"apiVersion": GRANT_API, "kind": "ReferenceGrant",
                     "metadata": {"name": f"{g.name}-ingress", "namespace": ns},
                     "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                        "namespace": g.namespace}],
                              "to": [{"group": "", "kind": "Service", "name": n} for n in sorted(names)]}})
    return docs


def documents(lw: Lowering, d: Dialect) -> list[dict]:
    out: list[dict] = []
    for g in lw.mesh.ingress_map.values():
        if not g.listeners:
            continue
        route = http_route(lw, d, g)
        if route is not None:
            out += [gateway(g)] + route
    return out

