"""webui/aliases/loops.py: the cycle it names is a real cycle; acyclic graphs have none
(hypothesis), and the catch-all rule matches delivery (a mailbox ends a chain)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from webui.aliases.loops import find_cycle

NODES = [f"u{i}@example.org" for i in range(8)]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(NODES), st.lists(st.sampled_from(NODES), max_size=3),
                       max_size=8), st.sampled_from(NODES))
def test_a_named_cycle_is_real_and_reachable(edges: dict[str, list[str]], start: str) -> None:
    cycle = find_cycle(edges, start)
    if cycle is None:
        return
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    for a, b in zip(cycle, cycle[1:]):
        assert b in edges[a]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20),
       st.integers(0, 7))
def test_edges_that_only_go_forward_never_loop(pairs: list[tuple[int, int]], start: int) -> None:
    edges: dict[str, list[str]] = {}
    for a, b in pairs:
        lo, hi = sorted((a, b))
        if lo != hi:
            edges.setdefault(NODES[lo], []).append(NODES[hi])
    assert find_cycle(edges, NODES[start]) is None


def test_catch_all_and_mailbox_rules() -> None:
    # a@ has no entry of its own: mail for it goes to the catch-all, which sends it back
    assert find_cycle({"@example.org": ["a@example.org"]}, "@example.org") == \
        ["@example.org", "a@example.org", "@example.org"]
    # a mailbox (no targets) ends the chain: no loop
    assert find_cycle({"@example.org": ["a@example.org"], "a@example.org": []},
                      "@example.org") is None
    # case does not hide a loop
    assert find_cycle({"A@Example.org": ["b@example.org"], "b@example.org": ["a@EXAMPLE.org"]},
                      "a@example.org") is not None
