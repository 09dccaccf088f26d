"""Summary statistics over seeds and Welch's t comparison of two arms (mean difference, 95 % CI, p-value)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NEEDS_SEEDS = "needs ≥ 2 seeds"
ZERO_VARIANCE = "zero variance in both arms"


@dataclass(frozen=True)
class Summary:
    """n, mean and sample standard deviation (ddof=1) of one arm's per-seed values; std is None when n == 1."""

    n: int
    mean: float
    std: float | None


@dataclass(frozen=True)
class Difference:
    """mean(a) − mean(b) with Welch's 95 % confidence interval and two-sided p-value.

    `ci95`, `p_value` and `df` are None when they are undefined; `note` then says why (NEEDS_SEEDS or
    ZERO_VARIANCE).
    """

    mean: float
    ci95: tuple[float, float] | None
    p_value: float | None
    df: float | None
    note: str | None = None


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample std of `values` (at least one).

    >>> summarize([1.0, 2.0, 3.0])
    Summary(n=3, mean=2.0, std=1.0)
    """
    if not values:
        raise ValueError("summarize needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None)
    return Summary(n, mean, math.sqrt(_variance(values, mean)))


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's unequal-variance t comparison of mean(a) − mean(b).

    The interval is d ± t_{(1+confidence)/2, ν} · se with se² = s_a²/n_a + s_b²/n_b and the Welch–Satterthwaite
    ν = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1)); the p-value is scipy's two-sided
    `ttest_ind(a, b, equal_var=False)`.
    """
    sa, sb = summarize(a), summarize(b)
    diff = sa.mean - sb.mean
    if sa.std is None or sb.std is None:
        return Difference(diff, None, None, None, NEEDS_SEEDS)
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se2 = va + vb
    if se2 == 0.0:
        return Difference(diff, None, None, None, ZERO_VARIANCE)
    df = se2**2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    from scipy import stats  # imported here: scipy is slow to import and only comparisons need it

    half = float(stats.t.ppf((1 + confidence) / 2, df)) * math.sqrt(se2)
    p_value = float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return Difference(diff, (diff - half, diff + half), p_value, df)


def _variance(values: Sequence[float], mean: float) -> float:
    return math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
