"""A small directed graph and the few algorithms the call graph needs.

Why not networkx: importing it takes about 130 ms here, a quarter of the
0.5 s a pre-commit run may take, and the call graph needs only reachability,
shortest paths, strongly connected components, a topological order and
simple paths. The class keeps networkx's names for what it has (`edges[u, v]`,
`successors`, `in_degree`), so callers read the same, and the tests check
every algorithm against networkx on random graphs.

Iteration follows insertion order, so results are deterministic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator

Node = Hashable


class _Edges:
    """`g.edges`: iterate (u, v); `(u, v) in g.edges`; `g.edges[u, v]` is the
    attribute dict; `g.edges(data=True)` yields (u, v, attrs)."""

    def __init__(self, succ: dict[Node, dict[Node, dict]]) -> None:
        self._succ = succ

    def __iter__(self) -> Iterator[tuple[Node, Node]]:
        return ((u, v) for u, nbrs in self._succ.items() for v in nbrs)

    def __len__(self) -> int:
        return sum(len(n) for n in self._succ.values())

    def __contains__(self, edge: object) -> bool:
        try:
            u, v = edge  # type: ignore[misc]
        except (TypeError, ValueError):
            return False
        return v in self._succ.get(u, ())

    def __getitem__(self, edge: tuple[Node, Node]) -> dict:
        u, v = edge
        return self._succ[u][v]

    def __call__(self, data: bool = False) -> Iterator[tuple]:
        if not data:
            return iter(self)
        return ((u, v, d) for u, nbrs in self._succ.items() for v, d in nbrs.items())


class Digraph:
    def __init__(self) -> None:
        self._succ: dict[Node, dict[Node, dict]] = {}
        self._pred: dict[Node, dict[Node, None]] = {}
        self.edges = _Edges(self._succ)

    def add_node(self, n: Node) -> None:
        if n not in self._succ:
            self._succ[n] = {}
            self._pred[n] = {}

    def add_edge(self, u: Node, v: Node, **attrs: object) -> None:
        self.add_node(u)
        self.add_node(v)
        self._succ[u].setdefault(v, {}).update(attrs)
        self._pred[v][u] = None

    @property
    def nodes(self) -> list[Node]:
        return list(self._succ)

    def __contains__(self, n: object) -> bool:
        return n in self._succ

    def __iter__(self) -> Iterator[Node]:
        return iter(self._succ)

    def __len__(self) -> int:
        return len(self._succ)

    def has_edge(self, u: Node, v: Node) -> bool:
        return v in self._succ.get(u, ())

    def successors(self, n: Node) -> Iterator[Node]:
        return iter(self._succ[n])

    def predecessors(self, n: Node) -> Iterator[Node]:
        return iter(self._pred[n])

    def in_degree(self, n: Node) -> int:
        return len(self._pred[n])

    def out_degree(self, n: Node) -> int:
        return len(self._succ[n])

    def degree(self, n: Node) -> int:
        return len(self._pred[n]) + len(self._succ[n])

    def subgraph(self, keep: Iterable[Node]) -> "Digraph":
        keep = set(keep)
        sub = Digraph()
        for u in self._succ:
            if u in keep:
                sub.add_node(u)
        for u in sub._succ:
            for v, d in self._succ[u].items():
                if v in keep:
                    sub.add_edge(u, v, **d)
        return sub


# ---- reachability ----------------------------------------------------------------

def _reach(adj: dict[Node, dict], start: Node) -> set[Node]:
    seen = {start}
    todo = [start]
    while todo:
        for v in adj[todo.pop()]:
            if v not in seen:
                seen.add(v)
                todo.append(v)
    seen.discard(start)
    return seen


def descendants(g: Digraph, n: Node) -> set[Node]:
    """Nodes reachable from n, n excluded (as networkx)."""
    return _reach(g._succ, n)


def ancestors(g: Digraph, n: Node) -> set[Node]:
    return _reach(g._pred, n)


def single_source_shortest_path(g: Digraph, source: Node) -> dict[Node, list[Node]]:
    """Breadth-first: for every node reachable from source, one path with the fewest hops."""
    paths = {source: [source]}
    frontier = deque([source])
    while frontier:
        u = frontier.popleft()
        for v in g._succ[u]:
            if v not in paths:
                paths[v] = paths[u] + [v]
                frontier.append(v)
    return paths


def shortest_path(g: Digraph, source: Node, target: Node) -> list[Node] | None:
    """A path with the fewest hops, or None when target is unreachable."""
    if source == target:
        return [source]
    parent: dict[Node, Node] = {source: source}
    frontier = deque([source])
    while frontier:
        u = frontier.popleft()
        for v in g._succ[u]:
            if v not in parent:
                parent[v] = u
                if v == target:
                    path = [v]
                    while path[-1] != source:
                        path.append(parent[path[-1]])
                    return path[::-1]
                frontier.append(v)
    return None


def has_path(g: Digraph, source: Node, target: Node) -> bool:
    return shortest_path(g, source, target) is not None


# ---- components and order ----------------------------------------------------------

def strongly_connected_components(g: Digraph) -> list[set[Node]]:
    """Tarjan's algorithm, iterative (a mesh may have thousands of services).
    Components come out in reverse topological order: a component comes
    before every component that can reach it."""
    index: dict[Node, int] = {}
    low: dict[Node, int] = {}
    on_stack: set[Node] = set()
    stack: list[Node] = []
    out: list[set[Node]] = []
    counter = 0
    for root in g._succ:
        if root in index:
            continue
        work = [(root, iter(g._succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            u, it = work[-1]
            for v in it:
                if v not in index:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    on_stack.add(v)
                    work.append((v, iter(g._succ[v])))
                    break
                if v in on_stack:
                    low[u] = min(low[u], index[v])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[u])
                if low[u] == index[u]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == u:
                            break
                    out.append(comp)
    return out


def topological_sort(g: Digraph) -> list[Node]:
    """Kahn's algorithm; raises ValueError on a cycle."""
    indeg = {n: len(p) for n, p in g._pred.items()}
    ready = deque(n for n, d in indeg.items() if d == 0)
    order = []
    while ready:
        u = ready.popleft()
        order.append(u)
        for v in g._succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    if len(order) != len(indeg):
        raise ValueError("the graph has a cycle")
    return order


def is_acyclic(g: Digraph) -> bool:
    try:
        topological_sort(g)
    except ValueError:
        return False
    return True


def all_simple_paths(g: Digraph, source: Node, target: Node) -> Iterator[list[Node]]:
    """Every path source ~> target that visits no node twice, depth first
    (source == target: the one path [source], as networkx)."""
    if source not in g or target not in g:
        return
    if source == target:
        yield [source]
        return
    path = [source]
    on_path = {source}
    stack = [iter(g._succ[source])]
    while stack:
        for v in stack[-1]:
            if v in on_path:
                continue
            if v == target:
                yield path + [v]
                continue
            path.append(v)
            on_path.add(v)
            stack.append(iter(g._succ[v]))
            break
        else:
            stack.pop()
            on_path.discard(path.pop())
