"""verify/digraph.py against networkx, the reference, on random graphs."""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpolicy.verify import digraph
from meshpolicy.verify.digraph import Digraph

NODES = st.integers(min_value=0, max_value=7)


@st.composite
def graphs(draw):
    n = draw(st.integers(min_value=1, max_value=8))
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] != e[1]),
                          max_size=20))
    ours, ref = Digraph(), nx.DiGraph()
    for i in range(n):
        ours.add_node(i)
        ref.add_node(i)
    for u, v in edges:
        ours.add_edge(u, v, witness=(u, v))
        ref.add_edge(u, v, witness=(u, v))
    return ours, ref


def _is_path(ref: nx.DiGraph, path: list) -> bool:
    return all(ref.has_edge(u, v) for u, v in zip(path, path[1:]))


@settings(max_examples=300, deadline=None)
@given(graphs(), NODES, NODES)
def test_reachability_and_shortest_paths_match_networkx(gs, a, b):
    ours, ref = gs
    a, b = a % len(ours), b % len(ours)
    assert digraph.descendants(ours, a) == nx.descendants(ref, a)
    assert digraph.ancestors(ours, a) == nx.ancestors(ref, a)
    assert digraph.has_path(ours, a, b) == nx.has_path(ref, a, b)
    path = digraph.shortest_path(ours, a, b)
    if nx.has_path(ref, a, b):
        assert path[0] == a and path[-1] == b and _is_path(ref, path)
        assert len(path) == nx.shortest_path_length(ref, a, b) + 1
    else:
        assert path is None
    sssp = digraph.single_source_shortest_path(ours, a)
    expected = nx.single_source_shortest_path_length(ref, a)
    assert {k: len(p) - 1 for k, p in sssp.items()} == expected
    assert all(_is_path(ref, p) and p[0] == a and p[-1] == k for k, p in sssp.items())


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_components_and_order_match_networkx(gs):
    ours, ref = gs
    comps = digraph.strongly_connected_components(ours)
    assert sorted(map(sorted, comps)) == sorted(map(sorted, nx.strongly_connected_components(ref)))
    # reverse topological: no edge leads from a component to one listed after it
    where = {n: i for i, c in enumerate(comps) for n in c}
    assert all(where[u] >= where[v] for u, v in ours.edges)
    assert digraph.is_acyclic(ours) == nx.is_directed_acyclic_graph(ref)
    if nx.is_directed_acyclic_graph(ref):
        order = {n: i for i, n in enumerate(digraph.topological_sort(ours))}
        assert len(order) == len(ref) and all(order[u] < order[v] for u, v in ref.edges)


@settings(max_examples=300, deadline=None)
@given(graphs(), NODES, NODES)
def test_simple_paths_match_networkx(gs, a, b):
    ours, ref = gs
    a, b = a % len(ours), b % len(ours)
    got = sorted(digraph.all_simple_paths(ours, a, b))
    assert got == sorted(nx.all_simple_paths(ref, a, b))


@settings(max_examples=100, deadline=None)
@given(graphs())
def test_graph_views_match_networkx(gs):
    ours, ref = gs
    assert list(ours.edges) == list(ref.edges) and len(ours.edges) == ref.number_of_edges()
    assert list(ours.edges(data=True)) == list(ref.edges(data=True))
    for u, v in ref.edges:
        assert (u, v) in ours.edges and ours.edges[u, v] == ref.edges[u, v]
    for n in ref.nodes:
        assert list(ours.successors(n)) == list(ref.successors(n))
        assert list(ours.predecessors(n)) == list(ref.predecessors(n))
        assert (ours.in_degree(n), ours.out_degree(n), ours.degree(n)) == (ref.in_degree(n), ref.out_degree(n),
                                                                            ref.degree(n))
    keep = [n for n in ref.nodes if n % 2 == 0]
    assert sorted(ours.subgraph(keep).edges) == sorted(ref.subgraph(keep).edges)


def test_components_of_a_long_chain_do_not_recurse():
    g = Digraph()
    for i in range(20_000):
        g.add_edge(i, i + 1)
    g.add_edge(20_000, 0)
    assert [len(c) for c in digraph.strongly_connected_components(g)] == [20_001]
