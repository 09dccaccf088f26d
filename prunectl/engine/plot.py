"""Plot a comparison: accuracy per arm against FLOPs, and against remaining weights for lottery levels (PNG/SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunectl.core.flops import FLOPS_LABEL
from prunectl.core.io import atomic_path
from prunectl.engine.compare import CompareReport, Group
from prunectl.errors import BadValueError, OutputError

FORMATS = {".png": "png", ".svg": "svg"}
REMAINING_LABEL = "remaining weights (fraction of the dense network)"
_METRIC_LABELS = {"final": "final epoch", "best": "best epoch, selected on the test set"}


def check_plot_path(path: str | Path) -> tuple[Path, str]:
    """The plot file and its format, if it can be written (checked before a recipe trains anything)."""
    path = Path(path).expanduser()
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BadValueError(f"plot file must end in .png or .svg, not '{path.name}'")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    return path, fmt


def plot(report: CompareReport, path: str | Path) -> Path:
    """Write the figure to `path` (format from its suffix: .png or .svg) atomically; returns the path.

    One series per arm with error bars of ± one sample std over seeds. A second panel, against the fraction of
    weights left, appears when some level carries `remaining` (lottery rounds); the baseline sits at 1.0 there.
    The directory must exist: a missing one is an error, and nothing is written.
    """
    path, fmt = check_plot_path(path)
    figure = _figure(report)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _figure(report: CompareReport) -> Any:
    # Agg explicitly, never an interactive backend; imported here because matplotlib is slow to import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    axes_kinds = ["flops"]
    if any(_remaining(g) is not None for g in report.groups if g.arm != "baseline"):
        axes_kinds.append("remaining")
    figure = Figure(figsize=(6.4 * len(axes_kinds), 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, kind in zip(figure.subplots(1, len(axes_kinds), squeeze=False)[0], axes_kinds, strict=True):
        _draw(ax, report, kind)
    title = f"{report.dataset}: " if report.dataset else ""
    figure.suptitle(f"{title}test accuracy per arm, mean ± std over seeds")
    return figure


def _draw(ax: Any, report: CompareReport, kind: str) -> None:
    for arm in report.arms():
        points = sorted((x, g.acc_mean, g.acc_std or 0.0) for g in report.groups
                        if g.arm == arm and (x := _x(g, kind)) is not None)
        if not points:
            continue
        xs, ys, errors = zip(*points, strict=True)
        line = "-" if len(set(xs)) == len(xs) else "none"  # levels sharing an x are not a curve
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, linestyle=line, label=arm)
        if len(report.levels()) <= 2:  # one pruning level: few points, so each says what it is
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{arm} {y:.2f}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.margins(x=0.15, y=0.2)  # one or two points per axis: keep them (and their labels) off the frame
    _log_axis(ax, kind)
    ax.set_xlabel(FLOPS_LABEL if kind == "flops" else REMAINING_LABEL)
    ax.set_ylabel(f"test accuracy % ({_METRIC_LABELS[report.metric]})")
    ax.set_title(f"accuracy vs {'FLOPs' if kind == 'flops' else 'remaining weights'}")
    if kind == "remaining":
        ax.invert_xaxis()  # sparser to the right, as lottery-ticket plots read
    ax.grid(True, which="both", alpha=0.3)
    if ax.has_data():
        ax.legend()


def _log_axis(ax: Any, kind: str) -> None:
    """Log x with readable labels: SI FLOPs or percent of weights, ticked at the data when there are few points."""
    from matplotlib.ticker import EngFormatter, NullFormatter, PercentFormatter

    ax.set_xscale("log")
    xs = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
    if 0 < len(xs) <= 8:
        ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(EngFormatter() if kind == "flops" else PercentFormatter(xmax=1.0))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _x(group: Group, kind: str) -> float | None:
    value = group.flops if kind == "flops" else _remaining(group)
    return float(value) if value is not None and value > 0 else None


def _remaining(group: Group) -> float | None:
    level = group.level
    if isinstance(level, dict) and isinstance(level.get("remaining"), int | float):
        return float(level["remaining"])
    return 1.0 if group.arm == "baseline" and level is None else None
