"""Compare finished runs per (level, arm): mean ± std over seeds, Welch differences to a reference arm, CI gates."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.core.latency import LatencySettings, measure
from prunectl.core.stats import Difference, summarize, welch
from prunectl.engine import arms as arm_registry
from prunectl.engine.gates import Gate, GateResult, arm_name, evaluate_gates, parse_gate
from prunectl.engine.info import resolve_run
from prunectl.errors import ArtifactError, BadValueError, PrunectlError
from prunectl.runs.store import Run, open_run

__all__ = ["CompareReport", "Gate", "GateResult", "Group", "arm_name", "evaluate_gates", "find_runs", "level_key",
           "level_label", "parse_gate", "report"]

SCHEMA = 1
METRICS = {"final": "final_acc", "best": "best_acc"}
METRIC_NOTES = {
    "final": "test accuracy of the final epoch",
    "best": "best-of: the best epoch's test accuracy, selected on the test set itself, so it is optimistic "
            "(docs/protocols.md#reporting-last-epoch-not-best-epoch)",
}


def level_key(level: Any) -> str:
    """The identity of a level: its canonical JSON (groups at equal keys are the same level)."""
    return json.dumps(level, sort_keys=True)


def level_label(level: Any) -> str:
    """A level for people: {'round': 3, 'remaining': 0.512} → 'round=3, remaining=0.512'; None → 'no level'."""
    if level is None:
        return "no level"
    if isinstance(level, dict):
        return ", ".join(f"{k}={v}" for k, v in level.items())
    return json.dumps(level)


@dataclass(frozen=True)
class Group:
    """The runs of one arm at one pruning level: per-seed accuracies and their summary."""

    level: Any
    arm: str
    acc_values: tuple[float, ...]
    acc_mean: float
    acc_std: float | None
    params: float
    flops: float
    epochs: float
    seeds: tuple[int, ...]
    runs: tuple[str, ...]
    paths: tuple[str, ...] = ()  # the run directories, in the order of `runs`
    mismatch: tuple[str, ...] = ()  # fields that differ between the group's runs: params, flops, epochs, seed
    varies: tuple[str, ...] = ()  # params / flops (/ scratch-B epochs) that differ by design: per-seed architectures
    params_range: tuple[float, float] = (0.0, 0.0)
    flops_range: tuple[float, float] = (0.0, 0.0)
    epochs_range: tuple[float, float] = (0.0, 0.0)
    vs: str | None = None
    diff: Difference | None = None
    latency_ms: float | None = None  # measured median forward time at batch 1 (`report(latency=...)`), else None

    @property
    def n(self) -> int:
        return len(self.acc_values)

    def to_dict(self) -> dict[str, Any]:
        diff = None
        if self.diff is not None:
            d = self.diff
            diff = {"vs": self.vs, "mean": d.mean, "ci95": list(d.ci95) if d.ci95 else None,
                    "p_value": d.p_value, "df": d.df, "note": d.note}
        return {"level": self.level, "arm": self.arm, "n": self.n, "acc_mean": self.acc_mean,
                "acc_std": self.acc_std, "acc_values": list(self.acc_values), "params": self.params,
                "flops": self.flops, "epochs": self.epochs, "seeds": list(self.seeds), "runs": list(self.runs),
                "paths": list(self.paths), "mismatch": list(self.mismatch), "diff": diff,
                "latency_ms": self.latency_ms, "varies": list(self.varies),
                "params_range": list(self.params_range), "flops_range": list(self.flops_range),
                "epochs_range": list(self.epochs_range)}


@dataclass(frozen=True)
class CompareReport:
    """Groups sorted by level (no level first) and arm order; optional gate results; remarks for people."""

    dataset: str | None
    metric: str
    reference: str
    groups: tuple[Group, ...]
    gates: tuple[GateResult, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def metric_note(self) -> str:
        return METRIC_NOTES[self.metric]

    @property
    def gates_passed(self) -> bool | None:
        """True when every gate holds at every level, False when one fails, None without gates."""
        return all(g.passed for g in self.gates) if self.gates else None

    def levels(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for g in self.groups:
            seen.setdefault(level_key(g.level), g.level)
        return list(seen.values())

    def arms(self) -> list[str]:
        return [a for a in arm_registry.LABELS if any(g.arm == a for g in self.groups)]

    def group(self, level: Any, arm: str, shared: bool = True) -> Group | None:
        """The group of `arm` at `level`; with `shared`, runs without a level stand in when `level` has none."""
        key = level_key(level)
        for g in self.groups:
            if g.arm == arm and level_key(g.level) == key:
                return g
        if shared and isinstance(level, dict) and "rewind" in level:  # a round-1 control serves every rewind point
            found = self.group({k: v for k, v in level.items() if k != "rewind"}, arm, False)
            if found is not None:
                return found
        return self.group(None, arm, False) if shared and level is not None else None

    def with_gates(self, results: Sequence[GateResult]) -> CompareReport:
        return replace(self, gates=tuple(results))

    def to_dict(self) -> dict[str, Any]:
        """The `compare --json` document (schema in docs/compare-json.md)."""
        return {"schema": SCHEMA, "dataset": self.dataset, "metric": self.metric,
                "metric_field": METRICS[self.metric], "metric_note": self.metric_note,
                "reference": self.reference, "groups": [g.to_dict() for g in self.groups],
                "gates": [r.to_dict() for r in self.gates], "gates_passed": self.gates_passed,
                "notes": list(self.notes)}


def find_runs(locations: Iterable[str | Path]) -> list[Run]:
    """Run directories (or zoo:NAME) named directly, or every run found (recursively) under a directory that is
    not one."""
    found: list[Run] = []
    for location in locations:
        path = Path(location).expanduser()
        if (path / paths.SPEC).is_file() or not path.is_dir():
            found.append(resolve_run(str(location)))
            continue
        inside = [Run(spec.parent) for spec in sorted(path.rglob(paths.SPEC))]
        if not inside:
            raise ArtifactError(f"no prunectl runs under {path}")
        found.extend(inside)
    return found


def report(runs: Iterable[Run | str | Path], *, metric: str = "final", reference: str = "fine-tuned",
           gates: Sequence[str | Gate] = (), latency: LatencySettings | None = None,
           device: str | None = "cpu", dataset: str | None = None) -> CompareReport:
    """Summarise finished runs per (level, arm) and compare each group with its reference.

    Reference rule: a winning-ticket group is compared with random-init (its control); every other group with
    `reference`. Both at the same level, where runs that carry no level (a baseline shared by all levels) stand
    in for an arm the level lacks. Unfinished runs and runs of non-arm stages (prune) are skipped with a note.
    `dataset` keeps only the runs of that dataset (a store holding several is refused without it).
    With `latency`, each group's architecture(s) are timed on `device` (`latency_ms`: batch 1, the mean over the
    group's distinct architectures).

    >>> rep = report(find_runs(["runs/vgg16-l1"]), gates=["scratch-B >= fine-tuned - 0.5"])  # doctest: +SKIP
    >>> rep.gates_passed                                                                      # doctest: +SKIP
    """
    if metric not in METRICS:
        raise BadValueError(f"unknown metric '{metric}' (valid: {', '.join(METRICS)})")
    reference = arm_name(reference)
    rows, notes = _load(runs, METRICS[metric])
    datasets = sorted({str(r["dataset"]) for r in rows if r.get("dataset") is not None})
    if dataset is not None:
        if dataset not in datasets:
            raise BadValueError(f"no finished runs of dataset '{dataset}' (the runs are of {', '.join(datasets)})")
        skipped = sum(r.get("dataset") != dataset for r in rows)
        rows = [r for r in rows if r.get("dataset") == dataset]
        datasets = [dataset]
        if skipped:
            notes.append(f"--dataset {dataset}: left out {skipped} run(s) of other datasets")
    if len(datasets) > 1:
        raise BadValueError(f"runs from different datasets: {', '.join(datasets)}; pick one with --dataset "
                            f"{datasets[0]} (or compare a recipe by name)")
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        buckets.setdefault((level_key(row["level"]), row["arm"]), []).append(row)
    groups = sorted((_group(b) for b in buckets.values()),
                    key=lambda g: (_sort_key(g.level), arm_registry.position(g.arm)))
    if latency is not None:
        groups = [replace(g, latency_ms=_latency_ms(g, latency, device)) for g in groups]
    rep = CompareReport(datasets[0] if datasets else None, metric, reference, tuple(groups), notes=tuple(notes))
    rep = replace(rep, groups=tuple(_with_diff(rep, g) for g in groups))
    needs_reference = any(arm_registry.arm(g.arm).needs_reference for g in groups)
    if needs_reference and not any(g.arm == reference for g in groups):
        rep = replace(rep, notes=(*rep.notes, f"no runs of the reference arm '{reference}'"))
    if gates:
        rep = rep.with_gates(evaluate_gates(rep, gates))
    return rep


def _load(runs: Iterable[Run | str | Path], key: str) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[str] = set()
    unfinished, other_stages = 0, set()
    trained_with: set[str | None] = set()
    for item in runs:
        run = item if isinstance(item, Run) else open_run(item)
        if not run.is_done():
            unfinished += 1
            continue
        result = run.result()
        stage = str(result.get("stage") or run.stage)
        try:
            found = (arm_registry.arm_named(str(result["arm"])) if result.get("arm")
                     else arm_registry.arm_for_stage(stage))
        except BadValueError as err:
            raise ArtifactError(f"{run.path / paths.RESULT}: {err}") from None
        if found is None:
            other_stages.add(stage)
            continue
        run_id = str(result.get("id") or run.id)
        if run_id in seen:
            notes.append(f"run {run_id} was given twice; counted once")
            continue
        seen.add(run_id)
        for name in (key, "params", "flops", "epochs", "seed"):
            if result.get(name) is None:
                raise ArtifactError(f"{run.path / paths.RESULT} has no '{name}'")
        rows.append({**result, "arm": found.label, "id": run_id, "level": result.get("level"), "acc": float(result[key]),
                     "path": str(run.path)})
        if found.label == "baseline":
            trained_with.add(_training_method(run))
    if unfinished:
        notes.append(f"skipped {unfinished} unfinished run(s)")
    for method in sorted(m for m in trained_with if m):
        notes.append(f"baseline runs trained with {method}'s training-time method: their row is the model as that "
                     "training left it" + (" (its smallest filters zeroed by the last soft mask)" if method == "sfp"
                                           else ""))
    if other_stages:
        notes.append(f"skipped runs of stages that are no comparison arm: {', '.join(sorted(other_stages))}")
    if not rows:
        raise BadValueError("no finished runs to compare" + (f" ({'; '.join(notes)})" if notes else ""))
    return rows, notes


def _training_method(run: Run) -> str | None:
    """The training-time method a run was trained with (its spec's `training`), or None (also for a run whose
    spec.json cannot be read: the comparison needs only its result.json, and this is a remark)."""
    try:
        training = run.record.get("spec", {}).get("training")
    except PrunectlError:
        return None
    method = training.get("method") if isinstance(training, dict) else None
    return method if isinstance(method, str) else None


def _arch_per_seed(method: Any) -> bool:
    """Whether `method` gives each seed's network its own architecture (its `per_seed_architecture` fact)."""
    from prunectl.methods import method_facts  # the method registry imports torch: only when grouping runs

    facts = method_facts(method) if isinstance(method, str) else None
    return facts is not None and facts.per_seed_architecture


def _group(rows: list[dict[str, Any]]) -> Group:
    acc = tuple(r["acc"] for r in rows)
    summary = summarize(acc)
    seeds = tuple(int(r["seed"]) for r in rows)
    differ = [name for name in ("params", "flops", "epochs") if len({r[name] for r in rows}) > 1]
    level = rows[0]["level"]
    by_design = isinstance(level, dict) and _arch_per_seed(level.get("method"))
    # Per-seed architectures give per-seed FLOPs, and so per-seed scratch-B budgets.
    flops_budget = arm_registry.arm(rows[0]["arm"]).budget == "B" if rows[0]["arm"] in arm_registry.LABELS else False
    varies = [name for name in differ if by_design and (name in ("params", "flops") or flops_budget)]
    mismatch = [name for name in differ if name not in varies]
    if len(set(seeds)) < len(seeds):
        mismatch.append("seed")
    return Group(level, rows[0]["arm"], acc, summary.mean, summary.std,
                 _common([r["params"] for r in rows]), _common([r["flops"] for r in rows]),
                 _common([r["epochs"] for r in rows]), seeds, tuple(r["id"] for r in rows),
                 tuple(r["path"] for r in rows), tuple(mismatch), tuple(varies),
                 _span([r["params"] for r in rows]), _span([r["flops"] for r in rows]),
                 _span([r["epochs"] for r in rows]))


def _latency_ms(group: Group, settings: LatencySettings, device: str | None) -> float:
    """Batch-1 median forward time of the group's architectures (each distinct one timed once)."""
    from prunectl.models import build_model
    from prunectl.training.trainer import resolve_device

    archs = {level_key(a.to_dict()): a for a in (Run(Path(p)).arch() for p in group.paths)}
    timed = [measure(build_model(a), a.input_size, replace(settings, batch_sizes=(1,)), resolve_device(device))
             for a in archs.values()]
    return round(sum(t["rows"][0]["median_ms"] for t in timed) / len(timed), 6)


def _with_diff(rep: CompareReport, group: Group) -> Group:
    vs = arm_registry.arm(group.arm).control or rep.reference  # a winning ticket is always judged against random init
    ref = rep.group(group.level, vs) if vs != group.arm else None
    if ref is None:
        return group
    return replace(group, vs=vs, diff=welch(group.acc_values, ref.acc_values))


def _span(values: list[Any]) -> tuple[float, float]:
    return (min(values), max(values))


def _common(values: list[Any]) -> float:
    """The shared value of a group's runs, or their mean when they differ (the group's `mismatch` says so)."""
    return values[0] if len(set(values)) == 1 else sum(values) / len(values)


def _sort_key(value: Any) -> tuple[Any, ...]:
    """Orders levels: no level first, then by `round` if present, then field by field in the order the run wrote
    them (result.json sorts keys), numbers numerically.

    {'round': 2, 'remaining': 0.64} comes before {'round': 10, 'remaining': 0.107}.
    """
    if value is None:
        return (0,)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0] != "round")  # stable: rounds first, rest as written
        return (3, tuple((k, _sort_key(v)) for k, v in items))
    if isinstance(value, list):
        return (4, tuple(_sort_key(v) for v in value))
    return (5, str(value))
