"""`from` in route rules as GAMMA consumer routes.

A route cannot match on the caller, but GAMMA lets each namespace route a
Service its own way: an HTTPRoute in the CALLER's namespace whose parentRef
is the Service (a consumer route) replaces the Service's own route (the
producer route, in the Service's namespace) for every pod of that
namespace. So a rule `from A, B -> ...` is exact when, for every namespace
of the mesh, `from` names either all of its services or none of them: the
consumer route of a namespace holds the rules whose `from` names it (the
`from` then decided), the producer route the rules without `from`. The
Service's own namespace is served by the producer route, so `from` must
name none of its services. Anything else is MP701, never a route that
applies to callers the policy did not name.

A consumer route's backendRefs name Services in another namespace, which
Gateway API allows only under a ReferenceGrant there (one per calling
namespace, naming the Services it may reach).
"""

from __future__ import annotations

from ...model.types import Mesh
from ...plan import RulePlan, ServicePlan
from ..http_routes import Dialect

GRANT_API = "gateway.networking.k8s.io/v1beta1"


def caller_views(mesh: Mesh, sp: ServicePlan, d: Dialect) -> dict[str, list[RulePlan]] | None:
    """Per calling namespace that needs a consumer route, the rule plans its
    callers meet (in order); {} when no rule has `from`; None after an MP701."""
    svc = sp.service
    chosen = [rp for rp in sp.rule_plans if rp.rule is not None and rp.rule.match.sources]
    if not chosen:
        return {}
    members: dict[str, set[str]] = {}
    for s in mesh.service_map.values():
        members.setdefault(s.namespace, set()).add(s.name)
    ok = True
    views: dict[str, frozenset[int]] = {}
    for ns, names in sorted(members.items()):
        picked = set()
        for rp in chosen:
            r = rp.rule
            named = {s.name for s in r.match.sources} & names
            where = f"in rule {r.index + 1} of route `{svc.name}`"
            if named and named != names:
                others = ", ".join(f"`{n}`" for n in sorted(names - named))
                d.reject(f"`from` {where}", r.match.span,
                         f"it names some services of namespace `{ns}` but not {others}: a consumer route "
                         "(an HTTPRoute in the callers' namespace) applies to every pod of its namespace")
                ok = False
            elif named and ns == svc.namespace:
                d.reject(f"`from` {where}", r.match.span,
                         f"it names services of `{ns}`, the namespace of `{svc.name}` itself: their route is "
                         "the service's own, which every other namespace without a route of its own meets too")
                ok = False
            elif named:
                picked.add(r.index)
        if picked:
            views[ns] = frozenset(picked)
    if not ok:
        return None
    return {ns: [rp for rp in sp.rule_plans if rp.rule is None or not rp.rule.match.sources
                 or rp.rule.index in view] for ns, view in views.items()}


def producer_plans(sp: ServicePlan) -> list[RulePlan]:
    """The rules of the Service's own route: those without `from`."""
    return [rp for rp in sp.rule_plans if rp.rule is None or not rp.rule.match.sources]


def reference_grant(sp: ServicePlan, caller_ns: str, kind: str, docs: list[dict]) -> dict:
    """Lets `kind` routes of caller_ns send to the Services their rules name."""
    svc = sp.service
    names = set()
    for doc in docs:
        for rule in doc["spec"]["rules"]:
            for ref in rule.get("backendRefs", []):
                names.add(ref["name"])
            for f in rule.get("filters", []):
                if f.get("type") == "RequestMirror":
                    names.add(f["requestMirror"]["backendRef"]["name"])
    return {"apiVersion": GRANT_API, "kind": "ReferenceGrant",
            "metadata": {"name": f"{svc.name}-from-{caller_ns}", "namespace": svc.namespace},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": kind, "namespace": caller_ns}],
                     "to": [{"group": "", "kind": "Service", "name": n} for n in sorted(names)]}}
