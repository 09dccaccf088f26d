"""LASSO channel selection for regression-based channel pruning (He, Zhang, Sun, ICCV 2017), in Gram form.

The problem is scikit-learn's `Lasso` objective, as the authors' released code solves it,

    min_β  1/(2M) ||y − Z β||² + α ||β||₁,

where Z (M rows: sampled points x output channels of the next conv; one column per input channel, that channel's
contribution) is reduced to G = ZᵀZ and g = Zᵀy first. We solve it with FISTA (Beck & Teboulle 2009) on (G, g)
in torch rather than with scikit-learn: Z is never materialised (it is 400·n x c, e.g. 204,800 x 512 floats = 420 MB
for a 512-wide consumer, where G is 1 MB), the solve runs on the run's device, and no dependency is added. The
minimiser and its support are the same; soft-thresholding gives exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ITERATIONS = 500
SEARCH_STEPS = 60


def lasso(gram: torch.Tensor, rhs: torch.Tensor, alpha: float, rows: int, start: torch.Tensor | None = None,
          iterations: int = ITERATIONS, lip: float | None = None) -> torch.Tensor:
    """argmin_β 1/(2·rows) (βᵀGβ − 2 gᵀβ) + α ||β||₁ by FISTA with step 1/L, L = λ_max(G)/rows (`lip`, if known)."""
    g, b = gram / rows, rhs / rows
    lip = float(torch.linalg.eigvalsh(g)[-1]) if lip is None else lip
    if lip <= 0:
        return torch.zeros_like(b)
    beta = torch.zeros_like(b) if start is None else start.clone()
    z, t = beta.clone(), 1.0
    for _ in range(iterations):
        v = z - (g @ z - b) / lip
        new = torch.sign(v) * (v.abs() - alpha / lip).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = new + ((t - 1) / t_next) * (new - beta)
        done = float((new - beta).abs().max()) <= 1e-6 * max(float(new.abs().max()), 1e-30)
        beta, t = new, t_next
        if done:
            break
    return beta


@dataclass(frozen=True)
class Support:
    """The LASSO result for one layer: `kept` channels (sorted), the penalty `alpha` and support size `nnz` that
    the search ended at, and whether it landed in the tolerance band."""

    kept: list[int]
    alpha: float
    nnz: int
    in_band: bool


def select(gram: torch.Tensor, rhs: torch.Tensor, rows: int, keep: int, tolerance: float, exact: bool) -> Support:
    """Search α (bisection in log space between α_max·1e-8 and α_max = max|g|/rows, where β = 0) until the support
    size lies in [keep, keep + ⌊tolerance·keep⌋] (the released code's rank_tol = 0.1 band). `exact` trims the
    support to `keep` channels by |β_c|·||z_c|| (their share of the fit); otherwise the whole support is kept, as
    in the released code. If no α lands in the band, the smallest support ≥ keep found is used (and trimmed)."""
    c = gram.shape[0]
    if keep >= c:
        return Support(list(range(c)), 0.0, c, True)
    top = keep + int(tolerance * keep)
    hi = float(rhs.abs().max()) / rows
    if hi <= 0:  # nothing to fit: every column is orthogonal to the target; keep the strongest columns
        order = torch.argsort(torch.diagonal(gram), descending=True, stable=True)
        return Support(sorted(order[:keep].tolist()), 0.0, 0, False)
    lo, lip = hi * 1e-8, float(torch.linalg.eigvalsh(gram / rows)[-1])
    found: tuple[torch.Tensor, float] | None = None  # the solution at the largest α seen with support >= keep
    beta, in_band = None, False
    for _ in range(SEARCH_STEPS):
        mid = (lo * hi) ** 0.5
        beta = lasso(gram, rhs, mid, rows, start=beta, lip=lip)
        nnz = int((beta != 0).sum())
        if nnz >= keep:
            lo, found = mid, (beta, mid)
            if nnz <= top:
                in_band = True
                break
        else:
            hi = mid
    best, best_alpha = found if found is not None else (lasso(gram, rhs, lo, rows, lip=lip), lo)
    nnz = int((best != 0).sum())
    strength = best.abs() * torch.diagonal(gram).clamp_min(0).sqrt()
    # rank: in the support first, then by share of the fit, then by column norm (for filling a too-small support)
    rank = strength + (best != 0).to(strength) * (strength.max() + 1) + 1e-12 * torch.diagonal(gram).sqrt()
    order = torch.argsort(rank, descending=True, stable=True)
    count = keep if exact or nnz < keep else nnz
    return Support(sorted(order[:count].tolist()), best_alpha, nnz, in_band)
