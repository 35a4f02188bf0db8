"""Alias loop detection: a pure function over ``source -> targets`` edges.

Called by the alias form, the API serializer and the CLI before saving. Sources and targets
are normalised address strings (``local@domain``, or ``@domain`` for a catch-all); a target
``@domain`` entry (domain alias) is followed too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def _key(address: str) -> str:
    at = address.rfind("@")
    return address[:at].lower() + address[at:].lower()


def find_cycle(edges: Mapping[str, Iterable[str]], start: str) -> list[str] | None:
    """The first loop reachable from ``start`` as ``[a, b, ..., a]``, or ``None``.

    An address also reaches its domain's catch-all only when it has no entry of its own,
    as delivery does; a catch-all is not followed from itself to other local parts.
    """
    graph = {_key(k): [_key(t) for t in v] for k, v in edges.items()}

    def next_of(node: str) -> list[str]:
        if node in graph:
            return graph[node]
        at = node.rfind("@")
        if at > 0:
            catch_all = node[at:]
            if catch_all in graph:
                return [catch_all]  # through the catch-all, named in the cycle
        return []

    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        on_path.add(node)
        path.append(node)
        for nxt in next_of(node):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    return visit(_key(start))
