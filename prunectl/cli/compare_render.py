"""Render a CompareReport for people: one rich table per pruning level, or the same as GitHub markdown."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from prunectl.core.flops import FLOPS_LABEL
from prunectl.core.stats import NEEDS_SEEDS
from prunectl.core.units import si_count
from prunectl.engine.compare import CompareReport, Group, level_key, level_label

_RIGHT = {1, 3, 4, 5}  # column indexes aligned right: n, params, FLOPs, epochs


def render_table(console: Console, report: CompareReport, paper: dict[str, Any] | None = None) -> None:
    """Print a table per level, the caption that says what the numbers are, gate results and remarks; `paper`
    (`prunectl.cli.recipes.paper_reference`) adds the paper's number of each arm as a reference row."""
    for level in _shown_levels(report):
        table = Table(title=_title(report, level))
        for i, name in enumerate(_columns(report, level)):
            table.add_column(name, justify="right" if i in _RIGHT else "left")
        for row in _rows(report, level) + _paper_rows(report, level, paper):
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    console.print(Text(_caption(report), style="dim"))
    if report.gates:
        gates = Table(title=_gate_title(report))
        for name in ("gate", "level", "left", "right", "result"):
            gates.add_column(name, justify="right" if name in ("left", "right") else "left")
        for row in _gate_rows(report):
            gates.add_row(*(Text(cell, style="red" if cell == "FAIL" else "") for cell in row))
        console.print(gates)
    for note in _notes(report):
        console.print(Text(f"note: {note}"))


def to_markdown(report: CompareReport, paper: dict[str, Any] | None = None) -> str:
    """The same tables as GitHub markdown, one section per level, ending with a newline."""
    dataset = f" on {report.dataset}" if report.dataset else ""
    lines = [f"## Comparison{dataset}", "", f"_{_caption(report)}_", ""]
    for level in _shown_levels(report):
        if _levelled(report):
            lines += [f"### {level_label(level)}", ""]
        lines += _markdown_table(_columns(report, level), _rows(report, level) + _paper_rows(report, level, paper),
                                 right=_RIGHT)
        lines.append("")
    if report.gates:
        lines += [f"### {_gate_title(report)}", ""]
        lines += _markdown_table(["gate", "level", "left", "right", "result"], _gate_rows(report), right={2, 3})
        lines.append("")
    lines += [f"- note: {note}" for note in _notes(report)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _columns(report: CompareReport, level: Any) -> list[str]:
    """The Δ column names what this level's groups were compared with (random-init for tickets)."""
    vs = {g.vs for g in report.groups if level_key(g.level) == level_key(level) and g.vs}
    reference = vs.pop() if len(vs) == 1 else report.reference
    latency = ["latency ms (batch 1)"] if _timed(report) else []
    return ["arm", "n", "accuracy % (mean ± std)", "params", FLOPS_LABEL, "epochs", *latency,
            f"Δ vs {reference} (95 % CI; p)"]


def _timed(report: CompareReport) -> bool:
    return any(g.latency_ms is not None for g in report.groups)


def _shown_levels(report: CompareReport) -> list[Any]:
    """Every level gets a table; runs without a level (the baseline) get none of their own when they appear as a
    row in every other table."""
    levels = report.levels()
    return [lv for lv in levels if lv is not None] if len(levels) > 1 else levels


def _level_groups(report: CompareReport, level: Any) -> list[Group]:
    """The groups of this level's table in arm order: its own, and those standing in for it (the unpruned
    baseline in every table; a round-1 random-init shared by tickets of every rewind point)."""
    found = [report.group(level, arm) for arm in report.arms()]
    return [g for g in found if g is not None]


def _rows(report: CompareReport, level: Any) -> list[list[str]]:
    rows = []
    for g in _level_groups(report, level):
        std = f"{g.acc_std:.2f}" if g.acc_std is not None else "n/a"
        rows.append([g.arm, str(g.n), f"{g.acc_mean:.2f} ± {std}",
                     _count(g.params, "params" in g.mismatch, varies=g.params_range if "params" in g.varies else None),
                     _count(g.flops, "flops" in g.mismatch, varies=g.flops_range if "flops" in g.varies else None),
                     _count(g.epochs, "epochs" in g.mismatch, si=False,
                            varies=g.epochs_range if "epochs" in g.varies else None),
                     *([f"{g.latency_ms:.2f}" if g.latency_ms is not None else "—"] if _timed(report) else []),
                     _delta(report, g)])
    return rows


def _paper_rows(report: CompareReport, level: Any, paper: dict[str, Any] | None) -> list[list[str]]:
    """`paper: fine-tuned` rows: the cited table's accuracy of each arm shown at this level, for reference."""
    if not paper:
        return []
    width = len(_columns(report, level))
    shown = {g.arm for g in _level_groups(report, level)}
    return [[f"paper: {arm}", "", f"{value:.2f}", *[""] * (width - 4), f"reference: {paper.get('source') or 'paper'}"]
            for arm, value in paper["accuracy"].items() if arm in shown]


def _delta(report: CompareReport, g: Group) -> str:
    if g.diff is None:
        return "reference" if _is_reference(report, g) else "—"
    d = g.diff
    vs = f"vs {g.vs}: " if g.vs != report.reference else ""
    if d.ci95 is None or d.p_value is None:
        why = "needs ≥ 2 seeds" if d.note == NEEDS_SEEDS else d.note
        return f"{vs}{d.mean:+.2f}, CI and p n/a ({why})"
    return f"{vs}{d.mean:+.2f} [{d.ci95[0]:+.2f}, {d.ci95[1]:+.2f}]; p={d.p_value:.3g}"


def _is_reference(report: CompareReport, g: Group) -> bool:
    """Whether some group (at its level, or any level for a shared unlevelled group) is compared with `g`."""
    return g.arm == report.reference or any(
        o.vs == g.arm and report.group(o.level, g.arm) is g for o in report.groups)


def _count(value: float, differs: bool, si: bool = True, varies: tuple[float, float] | None = None) -> str:
    """A group's count; `varies` (per-seed architectures by design) shows the mean and the seeds' range."""
    def shown(v: float) -> str:
        return si_count(v) if si else (f"{v:.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v))

    text = shown(value)
    if varies is not None:
        return f"{text} ({shown(varies[0])}–{shown(varies[1])})"
    return f"{text} (mean; differs!)" if differs else text


def _title(report: CompareReport, level: Any) -> str:
    dataset = f" on {report.dataset}" if report.dataset else ""
    return f"{level_label(level)}{dataset}" if _levelled(report) else f"comparison{dataset}"


def _levelled(report: CompareReport) -> bool:
    return report.levels() != [None]


def _caption(report: CompareReport) -> str:
    return (f"accuracy: {report.metric_note}; mean ± sample std over seeds. {FLOPS_LABEL}: fvcore counts. "
            f"Δ: difference of means to the reference arm (winning-ticket: to random-init) with Welch's 95 % CI "
            f"and two-sided p" + ("; runs without a level stand in at every level." if _levelled(report) else "."))


def _gate_title(report: CompareReport) -> str:
    failed = sum(not r.passed for r in report.gates)
    return "gates: all pass" if not failed else f"gates: {failed} of {len(report.gates)} checks FAIL"


def _gate_rows(report: CompareReport) -> list[list[str]]:
    return [[r.gate, level_label(r.level), f"{r.left:.2f}", f"{r.right:.2f}", "pass" if r.passed else "FAIL"]
            for r in report.gates]


def _notes(report: CompareReport) -> list[str]:
    notes = list(report.notes)
    for g in report.groups:
        fields = [f for f in g.mismatch if f != "seed"]
        where = f"{g.arm} at {level_label(g.level)}"
        if fields:
            notes.append(f"{where}: {', '.join(fields)} differ between its runs; the mean is shown")
        if g.varies:
            notes.append(f"{where}: {', '.join(g.varies)} vary between seeds by design ({g.level['method']} "
                         "chooses the architecture from the trained weights, so each seed's network gets its own"
                         + ("; scratch-B's epochs follow from its FLOPs" if "epochs" in g.varies else "")
                         + "); the mean and the seeds' range are shown")
        if "seed" in g.mismatch:
            notes.append(f"{where}: seeds repeat ({', '.join(map(str, g.seeds))}); are two experiments mixed?")
    return notes


def _markdown_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in (header, rule, *rows)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
