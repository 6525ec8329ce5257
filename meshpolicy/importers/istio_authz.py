"""AuthorizationPolicies -> allow and deny rules.

Istio's evaluation (docs/import.md, "AuthorizationPolicy"): for a workload,
CUSTOM, then DENY policies (any match denies), then ALLOW policies (if any
applies to the workload, a request must match one), else allow. A policy
applies mesh-wide from the root namespace without a selector, to a namespace
without a selector, else to the workloads its selector matches. That is the
language's own order (deny wins, then allow, then the default), so the
import sets `default deny` and writes `allow * -> S` for each service that
no ALLOW policy applies to.

One Istio rule matches when any `from` source, any `to` operation and every
`when` condition match; each `to` operation becomes one rule here, with the
union of the `from` sources.
"""

from __future__ import annotations

import re

from ..codes import diag
from ..model import types as t
from ..span import Span
from .context import Context
from .inventory import K8sService, Resource
from .istio_routes import glob_from_template
from .yamlmarks import YMap, YSeq, empty_map

_ALL = frozenset(t.HTTP_METHODS)


def authorization_policies(cx: Context, policies: list[Resource], root_ns: str) -> set[tuple[str, str]]:
    """Adds the rules; returns the services at least one ALLOW policy applies to."""
    allow_scoped: set[tuple[str, str]] = set()
    for res in sorted(policies, key=lambda r: (r.namespace != root_ns, r.sort_key())):
        spec = res.spec
        action = str(spec.get("action") or "ALLOW")
        if "targetRef" in spec or "targetRefs" in spec:
            key = "targetRef" if "targetRef" in spec else "targetRefs"
            cx.refuse(res, f"spec.{key}", spec.key_at(key), "policies attached to waypoints or gateways are not "
                      "imported", "authorization")
            continue
        if action == "CUSTOM":
            cx.diags.append(diag("MP903", f"{res.label}: CUSTOM (external authorization) policies are not imported",
                                 spec.at("action"), notes=["findings about authorization do not account for it"]))
            continue
        if action == "AUDIT":
            cx.approximate(res, "spec.action", spec.at("action"), "AUDIT only logs; it changes no decision, so it "
                           "adds no rule (exact)")
            continue
        if action not in ("ALLOW", "DENY"):
            cx.refuse(res, "spec.action", spec.at("action"), f"unknown action `{action}`")
            continue
        from .istio_jwt import selects_gateway

        if selects_gateway(cx, res, root_ns):
            rules = spec.get("rules")
            if action == "ALLOW" and isinstance(rules, YSeq) and any(r == {} for r in rules):
                # allows every request at the gateway: what an ingress does without rules of its own
                cx.coverage.imported[res.kind] += 1
                continue
            cx.diags.append(diag("MP931", f"{res.label} selects an ingress gateway: authorization at the gateway is "
                                          "not imported", spec.at("selector"),
                                 notes=["findings about authorization do not account for it"]))
            continue
        scope = _scope(cx, res, root_ns)
        cx.coverage.imported[res.kind] += 1
        if action == "ALLOW":
            allow_scoped.update(k.key for k in scope)
        rules = spec.get("rules")
        for i, rule in enumerate(rules if isinstance(rules, YSeq) else []):
            _rule(cx, res, rule if isinstance(rule, YMap) else None, rules.at(i), f"spec.rules[{i}]",
                  "allow" if action == "ALLOW" else "deny", scope)
    return allow_scoped


def _scope(cx: Context, res: Resource, root_ns: str) -> list[K8sService]:
    return cx.policy_scope(res, root_ns)


def _rule(cx: Context, res: Resource, rule: YMap | None, span: Span, where: str, effect: str,
          scope: list[K8sService]) -> None:
    rule = rule if rule is not None else empty_map(res.spec)
    claims: list[list[t.ClaimTest]] | None = None  # a token is needed: alternatives of claim tests
    if "when" in rule:
        from .istio_jwt import token_conditions

        claims = token_conditions(cx, res, rule["when"], where, effect)
        if claims is None:
            return
    sources = _sources(cx, res, rule.get("from"), rule, where, effect, scope, claims)
    if sources is None:
        return
    operations = rule.get("to")
    ops = list(enumerate(operations)) if isinstance(operations, YSeq) and operations else [(None, None)]
    for j, op in ops:
        built = _operation(cx, res, op.get("operation") if isinstance(op, YMap) else None,
                           f"{where}.to[{j}].operation", span, effect)
        if built is None:
            continue
        methods, paths = built
        for ksvc in scope:
            svc = cx.service_for(ksvc)
            cx.mesh.auth_rules.append(t.AuthRule.make(
                index=len(cx.mesh.auth_rules), effect=effect, sources=[s.model_copy() for s in sources],
                target=t.Ref.make(name=svc.name, span=span, spans={}), methods=list(methods),
                paths=[p.model_copy() for p in paths], span=span, spans={}))


def _negated(cx: Context, res: Resource, src: YMap, scope: list[K8sService], where: str,
             effect: str) -> list[t.Source] | None:
    """A source with `notNamespaces`/`notPrincipals`: the workloads in the inputs
    that pass every condition, named one by one. A caller without an identity
    passes a negative condition too (Envoy's `not_id` of an identity it does
    not have); the language can name it only within `*`, which is exact where
    every destination in scope is STRICT (it never gets through) and said
    otherwise."""
    unsupported = [k for k in src if k not in ("principals", "namespaces", "notPrincipals", "notNamespaces")]
    if unsupported:
        cx.refuse(res, f"{where}.{unsupported[0]}", src.key_at(unsupported[0]), "the language cannot express "
                  "this source yet; the rule is left out", f"{'denied' if effect == 'deny' else 'allowed'} requests")
        return None
    names = [s.name for s in cx.mesh.services]
    if "principals" in src or "namespaces" in src:
        keep: set[str] = set()
        for p in src.get("principals") or []:
            keep |= {x.name for x in _principal(cx, res, str(p), src.at("principals")) if x.kind == "service"}
        nss = [str(n) for n in src.get("namespaces") or []]
        in_ns = {s.name for s in cx.mesh.services if s.namespace in nss}
        keep = keep & in_ns if src.get("principals") and nss else keep | in_ns
        names = [n for n in names if n in keep]
    excluded_ns = {str(n) for n in src.get("notNamespaces") or []}
    excluded_ids = {str(p).removeprefix("spiffe://") for p in src.get("notPrincipals") or []}
    if any("*" in x for x in excluded_ns | excluded_ids):
        cx.refuse(res, where, src.span, "wildcards in notNamespaces/notPrincipals cannot be expressed; the rule is "
                  "left out", f"{'denied' if effect == 'deny' else 'allowed'} requests")
        return None
    td = cx.mesh.settings.trust_domain
    out = [t.Source.make(kind="service", name=s.name, span=src.span, spans={}) for s in cx.mesh.services
           if s.name in names and s.namespace not in excluded_ns
           and f"{td}/ns/{s.namespace}/sa/{s.account}" not in excluded_ids]
    cx.imported(res, where)
    if "principals" not in src and "namespaces" not in src:
        strict = all(cx.mesh.mtls_of(cx.service_for(k)) == "strict" for k in scope)
        if not strict:
            cx.approximate(res, where, src.span, "also matches callers without an identity in Istio; the language "
                           "names them only within `*`, so they are left out of this rule"
                           + (" (the deny covers less than Istio's)" if effect == "deny"
                              else " (the allow admits less than Istio's)"))
    return out


def _sources(cx: Context, res: Resource, froms, rule: YMap, where: str, effect: str,
             scope: list[K8sService], claims: list[list[t.ClaimTest]] | None = None) -> list[t.Source] | None:
    """The union of the `from` sources as the language's sources, or None when
    one cannot be expressed (the rule is then left out, and said so). With
    `claims` (token conditions in `when`) every source must carry a token."""
    from .istio_jwt import internet_sources

    if not isinstance(froms, YSeq) or not froms:
        if claims is not None:
            return internet_sources(cx, res, None, claims, rule.key_at("when"), f"{where}.when", effect)
        return [t.Source.make(kind="any", span=rule.span, spans={})]
    out: list[t.Source] = []
    for i, entry in enumerate(froms):
        src = entry.get("source") if isinstance(entry, YMap) else None
        at = froms.at(i)
        if not isinstance(src, YMap):
            continue
        if claims is not None or "requestPrincipals" in src:
            got = internet_sources(cx, res, src, claims if claims is not None else [[]], at,
                                   f"{where}.from[{i}].source", effect)
            if got is None:
                return None
            out += got
            continue
        if "notNamespaces" in src or "notPrincipals" in src:
            got = _negated(cx, res, src, scope, f"{where}.from[{i}].source", effect)
            if got is None:
                return None
            out += got
            continue
        unsupported = [k for k in src if k not in ("principals", "namespaces")]
        if unsupported:
            cx.refuse(res, f"{where}.from[{i}].source.{unsupported[0]}", src.key_at(unsupported[0]),
                      "the language cannot express this source yet; the rule is left out",
                      f"{'denied' if effect == 'deny' else 'allowed'} requests")
            return None
        principals = [str(p) for p in src.get("principals") or []]
        namespaces = [str(n) for n in src.get("namespaces") or []]
        if principals and namespaces:
            # both must hold: the services that have one of the identities and live in one of the namespaces
            known = [s for p in principals for s in _principal(cx, res, p, src.at("principals"))]
            out += [s for s in known if s.kind == "service" and
                    cx.mesh.service(s.name) is not None and cx.mesh.service(s.name).namespace in namespaces]
        elif principals:
            out += [s for p in principals for s in _principal(cx, res, p, src.at("principals"))]
        else:
            for ns in namespaces:
                got = _namespace(cx, res, ns, src.at("namespaces"))
                out += got if isinstance(got, list) else [got]
        cx.imported(res, f"{where}.from.source")
    out = [s for s in out if s is not None]
    if not out:
        return None  # matches no caller: a rule that can never apply
    return out


def _namespace(cx: Context, res: Resource, ns: str, at: Span) -> t.Source | list[t.Source] | None:
    if ns == "*":
        return t.Source.make(kind="authenticated", span=at, spans={})
    if ns.count("*") == 1 and (ns.startswith("*") or ns.endswith("*")):
        # `prod-*`, `*-test`: the namespaces in the inputs it matches (others cannot be named)
        stem = ns.strip("*")
        hits = sorted(n for n in cx.inv.namespaces() if (n.startswith(stem) if ns.endswith("*") else n.endswith(stem)))
        if not hits:
            cx.diags.append(diag("MP911", f"{res.label}: namespace pattern `{ns}` matches no namespace in the "
                                          "inputs", at))
            return None
        cx.approximate(res, "source.namespaces", at, f"`{ns}` is imported as the namespaces in the inputs it "
                       f"matches ({', '.join(hits)}); namespaces created later are not covered")
        return [t.Source.make(kind="namespace", name=n, span=at, spans={}) for n in hits]
    if "*" in ns:
        cx.refuse(res, "source.namespaces", at, f"`{ns}`: only `*`, `prefix*`, `*suffix` or a whole namespace is "
                  "expressible")
        return None
    if ns not in cx.inv.namespaces():
        cx.diags.append(diag("MP911", f"{res.label}: namespace `{ns}` has no workload in the inputs", at))
    return t.Source.make(kind="namespace", name=ns, span=at, spans={})


_PRINCIPAL = re.compile(r"(?P<td>[^/]+)/ns/(?P<ns>[^/]+)/sa/(?P<sa>[^/]+)")


def _principal(cx: Context, res: Resource, principal: str, at: Span) -> list[t.Source]:
    if principal == "*":
        return [t.Source.make(kind="authenticated", span=at, spans={})]
    m = _PRINCIPAL.fullmatch(principal.removeprefix("spiffe://"))
    if m and m["sa"] == "*" and "*" not in m["ns"] and m["td"] in ("*", cx.mesh.settings.trust_domain):
        got = _namespace(cx, res, m["ns"], at)
        return got if isinstance(got, list) else [got] if got else []
    if m is None or "*" in principal:
        cx.refuse(res, "source.principals", at, f"`{principal}`: only whole principals, `*` and "
                  "`<trust domain>/ns/<namespace>/sa/*` are expressible")
        return []
    hits = cx.by_identity().get((m["ns"], m["sa"]), []) if m["td"] == cx.mesh.settings.trust_domain else []
    if not hits and m["td"] == cx.mesh.settings.trust_domain and \
            any((g.namespace, g.account) == (m["ns"], m["sa"]) for g in cx.mesh.ingresses):
        # the ingress gateway's identity: requests it forwards, the language's `internet`
        return [t.Source.make(kind="internet", span=at, spans={})]
    if not hits:
        cx.diags.append(diag("MP911", f"{res.label}: principal `{principal}` is the identity of no workload in the "
                                      "inputs", at))
    return [t.Source.make(kind="service", name=s.name, span=at, spans={}) for s in hits]


def _operation(cx: Context, res: Resource, op, where: str, span: Span, effect: str):
    """(methods, paths) of one `to` operation, or None when it cannot be expressed."""
    if not isinstance(op, YMap):
        return [], []
    methods: list[str] = []
    paths: list[t.PathPattern] = []
    for key, value in op.items():
        at = op.at(key)
        if key == "methods":
            methods = [str(m).upper() for m in value or []]
            if "*" in methods:
                methods = []
        elif key == "notMethods":
            excluded = {str(m).upper() for m in value or []}
            methods = [m for m in t.HTTP_METHODS if m not in excluded]
            cx.imported(res, f"{where}.notMethods")
        elif key == "paths":
            for p in value or []:
                pattern = _path(str(p), at)
                if pattern is None:
                    cx.refuse(res, f"{where}.paths", at, f"`{p}` is not an Istio path pattern meshc can read")
                    return None
                if pattern == "any":
                    paths = []
                    break
                paths.append(pattern)
        elif key in ("hosts", "ports") and value:
            cx.approximate(res, f"{where}.{key}", at, "narrows the rule to some hosts or ports; imported for every "
                           "host and port of the service" + (", so the deny may cover more than Istio's"
                                                            if effect == "deny" else ", so the allow may admit more"))
        else:
            cx.refuse(res, f"{where}.{key}", op.key_at(key), "the language cannot express this operation yet; the "
                      "rule is left out", f"{'denied' if effect == 'deny' else 'allowed'} requests")
            return None
    cx.imported(res, where)
    return methods, paths


def _path(p: str, at: Span):
    """Istio's path forms: exact, `prefix*`, `*suffix`, `*`, and templates `{*}`/`{**}`."""
    if p == "*":
        return "any"
    glob = glob_from_template(p)
    if glob is not None:
        return t.PathPattern.make(kind="glob", value=glob, span=at, spans={})
    if p.endswith("*") and "*" not in p[:-1]:
        return t.PathPattern.make(kind="prefix", value=p[:-1], span=at, spans={})
    if p.startswith("*") and "*" not in p[1:]:
        return t.PathPattern.make(kind="regex", value=".*" + re.escape(p[1:]), span=at, spans={})
    if "*" in p or "{" in p:
        return None
    return t.PathPattern.make(kind="exact", value=p, span=at, spans={})
