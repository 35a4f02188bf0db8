"""A tiny SVG line chart of queue size and deliveries per sample (no JavaScript). Pure:
numbers in, markup of numbers out (no user text reaches it)."""

from __future__ import annotations

from collections.abc import Sequence

WIDTH, HEIGHT, PAD = 720, 160, 24


def polyline(values: Sequence[int], top: int) -> str:
    if not values:
        return ""
    step = (WIDTH - 2 * PAD) / max(1, len(values) - 1)
    pts = []
    for i, v in enumerate(values):
        x = PAD + i * step
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top if top else 0)
        pts.append(f"{x:.1f},{y:.1f}")
    return " ".join(pts)


def chart(sizes: Sequence[int], delivered: Sequence[int]) -> dict[str, object]:
    top = max([1, *sizes, *delivered])
    return {"width": WIDTH, "height": HEIGHT, "top": top,
            "sizes": polyline(sizes, top), "delivered": polyline(delivered, top)}
