"""Counts for people: 2314688 → '2.31M' (params, FLOPs), in one place for every table and line that shows them."""

from __future__ import annotations


def si_count(value: float, spec: str = ".2f") -> str:
    """`value` scaled to K / M / G with the format `spec`, or as it is below a thousand.

    >>> si_count(2314688), si_count(19074, ".3g"), si_count(512)
    ('2.31M', '19.1K', '512')
    """
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:{spec}}{suffix}"
    return f"{value:g}"
