"""How a route rule is named in the figures of both proxies (`meshc stat`).

The Envoy target gives each route a `stat_prefix` (Envoy then counts it as
`vhost.<destination>.route.<name>.*`) and meshproxy labels its outbound
metrics with the same name, so a rule has one identity whichever proxy ran
it. Kept import-free: meshproxy names a rule on its request path.
"""

from __future__ import annotations


def rule_stat_name(index: int | None) -> str:
    """`rule-N` for the route block's rule N (0-based, as the Envoy routes
    are named; a rule split per path pattern shares its rule's name),
    `default` for the implicit rule of a service without a route block."""
    return "default" if index is None else f"rule-{index}"


def rule_index(name: str) -> int | None:
    """rule_stat_name's inverse; None for `default` or a name it did not make."""
    head, _, n = name.partition("-")
    return int(n) if head == "rule" and n.isdigit() else None
