"""compare: statistics, grouping, reference differences, gates, JSON, markdown/table rendering and plots."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from scipy import stats as sps

from prunectl.cli.compare_render import render_table, to_markdown
from prunectl.core.stats import NEEDS_SEEDS, ZERO_VARIANCE, summarize, welch
from prunectl.engine.compare import (
    Gate,
    arm_name,
    evaluate_gates,
    find_runs,
    parse_gate,
    report,
)
from prunectl.engine.plot import plot
from prunectl.errors import ArtifactError, BadValueError, OutputError
from prunectl.runs.store import Run

# Chosen so the Welch numbers are checkable by hand: var(FT) = 0.4/4 = 0.1, var(SB) = 0.08/2 = 0.04,
# se² = 0.1/5 + 0.04/3 = 1/30, Welch–Satterthwaite df = (1/30)² / (0.02²/4 + (1/75)²/2) = 100/17.
FT = [93.0, 93.2, 93.4, 93.6, 93.8]
SB = [93.6, 93.8, 94.0]
STAGES = {"baseline": "train", "fine-tuned": "finetune", "scratch-E": "scratch-e", "scratch-B": "scratch-b",
          "winning-ticket": "ticket", "random-init": "random-init"}


def make_run(root, name, arm, acc, seed, *, best=None, level=None, params=1000, flops=2_000_000, epochs=40,
             dataset="cifar10", with_arm=True, finished=True, stage=None):
    """A finished run directory by hand: spec.json plus result.json (no training)."""
    path = root / name
    path.mkdir(parents=True)
    stage = stage or STAGES[arm]
    (path / "spec.json").write_text(json.dumps({"kind": "TrainSpec", "id": name, "stage": stage, "spec": {}}))
    if finished:
        result = {"final_acc": acc, "best_acc": acc + 0.5 if best is None else best, "params": params,
                  "flops": flops, "epochs": epochs, "seed": seed, "stage": stage, "dataset": dataset, "id": name,
                  "parent": None, "wall_seconds": 1.0}
        if with_arm:
            result["arm"] = arm
        if level is not None:
            result["level"] = level
        (path / "result.json").write_text(json.dumps(result))
    return Run(path)


def arm_runs(root, arm, values, level=None, prefix=None, **kw):
    tag = prefix or arm
    return [make_run(root, f"{tag}-{i}", arm, v, i, level=level, **kw) for i, v in enumerate(values)]


@pytest.fixture
def classic(tmp_path):
    runs = arm_runs(tmp_path, "fine-tuned", FT, flops=1_000_000)
    runs += arm_runs(tmp_path, "scratch-B", SB, flops=1_000_000, epochs=320)
    runs += arm_runs(tmp_path, "baseline", [94.0], flops=4_000_000, params=4000, epochs=160)
    return runs


def test_summary_and_welch_match_an_independent_computation():
    s = summarize(FT)
    assert s.n == 5 and s.mean == pytest.approx(93.4) and s.std == pytest.approx(math.sqrt(0.1))
    assert summarize([93.0]).std is None
    d = welch(SB, FT)
    df = 100 / 17
    assert d.df == pytest.approx(df)
    half = sps.t.ppf(0.975, df) * math.sqrt(1 / 30)
    assert d.mean == pytest.approx(0.4)
    assert d.ci95 == pytest.approx((0.4 - half, 0.4 + half))
    t = 0.4 / math.sqrt(1 / 30)
    assert d.p_value == pytest.approx(2 * sps.t.sf(t, df))
    assert d.p_value == pytest.approx(sps.ttest_ind(SB, FT, equal_var=False).pvalue)


def test_welch_undefined_cases_are_null_with_a_reason():
    one = welch([93.0], FT)
    assert (one.ci95, one.p_value, one.df, one.note) == (None, None, None, NEEDS_SEEDS)
    assert one.mean == pytest.approx(93.0 - 93.4)
    flat = welch([90.0, 90.0], [91.0, 91.0])
    assert flat.ci95 is None and flat.note == ZERO_VARIANCE and flat.mean == pytest.approx(-1.0)


def test_groups_and_difference_to_the_reference(classic):
    rep = report(classic)
    assert [(g.arm, g.n) for g in rep.groups] == [("baseline", 1), ("fine-tuned", 5), ("scratch-B", 3)]
    base, ft, sb = rep.groups
    assert ft.acc_mean == pytest.approx(93.4) and ft.acc_std == pytest.approx(math.sqrt(0.1))
    assert sb.seeds == (0, 1, 2) and sb.runs == ("scratch-B-0", "scratch-B-1", "scratch-B-2")
    assert (sb.params, sb.flops, sb.epochs) == (1000, 1_000_000, 320) and sb.mismatch == ()
    assert ft.diff is None  # the reference itself
    assert sb.vs == "fine-tuned" and sb.diff.p_value == pytest.approx(sps.ttest_ind(SB, FT, equal_var=False).pvalue)
    assert base.vs == "fine-tuned" and base.diff.ci95 is None and base.diff.note == NEEDS_SEEDS
    assert rep.dataset == "cifar10" and rep.levels() == [None]


def test_reference_option_and_aliases(classic):
    rep = report(classic, reference="Baseline")
    assert rep.reference == "baseline"
    ft = next(g for g in rep.groups if g.arm == "fine-tuned")
    assert ft.vs == "baseline" and ft.diff.mean == pytest.approx(93.4 - 94.0) and ft.diff.ci95 is None
    assert [arm_name(a) for a in ("FT", "finetune", "scratch-b", "ticket", "random", "SCRATCH-E")] == [
        "fine-tuned", "fine-tuned", "scratch-B", "winning-ticket", "random-init", "scratch-E"]
    with pytest.raises(BadValueError, match="did you mean 'scratch-B'"):
        report(classic, reference="scrach-B")


def test_metric_best_uses_best_acc_and_says_it_selects_on_the_test_set(tmp_path):
    runs = [make_run(tmp_path, f"ft-{i}", "fine-tuned", 90.0 + i, i, best=95.0 + i) for i in range(3)]
    final, best = report(runs), report(runs, metric="best")
    assert final.groups[0].acc_mean == pytest.approx(91.0) and best.groups[0].acc_mean == pytest.approx(96.0)
    assert "test set" in best.to_dict()["metric_note"] and best.to_dict()["metric_field"] == "best_acc"
    assert "test set" in to_markdown(best) and "final epoch" in to_markdown(final)
    with pytest.raises(BadValueError, match="unknown metric"):
        report(runs, metric="mean")


def test_arm_derived_from_stage_and_grouped_by_level(tmp_path):
    a, b = {"method": "l1-norm", "variant": "A"}, {"method": "l1-norm", "variant": "B"}
    runs = arm_runs(tmp_path, "fine-tuned", [90.0, 91.0], level=a, prefix="ftA", with_arm=False)
    runs += arm_runs(tmp_path, "scratch-E", [92.0, 93.0], level=a, prefix="seA", with_arm=False)
    runs += arm_runs(tmp_path, "fine-tuned", [80.0, 81.0], level=b, prefix="ftB", with_arm=False)
    runs += arm_runs(tmp_path, "baseline", [95.0, 96.0], with_arm=False)
    rep = report(runs)
    assert [(g.level, g.arm) for g in rep.groups] == [(None, "baseline"), (a, "fine-tuned"), (a, "scratch-E"),
                                                      (b, "fine-tuned")]
    assert rep.groups[2].vs == "fine-tuned" and rep.groups[2].diff.mean == pytest.approx(2.0)
    # the unlevelled baseline stands in at every level when it is the reference
    by_base = report(runs, reference="baseline")
    assert [g.diff.mean for g in by_base.groups[1:]] == pytest.approx([-5.0, -3.0, -15.0])


def test_lottery_levels_compare_winning_ticket_with_random_init(tmp_path):
    levels = [{"round": 1, "remaining": 0.8}, {"round": 10, "remaining": 0.107}, {"round": 2, "remaining": 0.64}]
    runs = []
    for k, level in enumerate(levels):
        runs += arm_runs(tmp_path, "winning-ticket", [90.0 + k, 90.5 + k], level=level, prefix=f"wt{k}")
        runs += arm_runs(tmp_path, "random-init", [89.0 + k, 89.4 + k], level=level, prefix=f"ri{k}")
    rep = report(runs)
    assert [g.level["round"] for g in rep.groups] == [1, 1, 2, 2, 10, 10]  # numeric, not text, order
    ticket = rep.group(levels[0], "winning-ticket")
    assert ticket.vs == "random-init" and ticket.diff.mean == pytest.approx(90.25 - 89.2)
    assert rep.group(levels[0], "random-init").diff is None  # no fine-tuned runs: nothing to compare with
    assert rep.notes == ()


def test_to_dict_field_by_field(classic):
    doc = report(classic, gates=["scratch-B >= fine-tuned"]).to_dict()
    json.dumps(doc, allow_nan=False)
    assert set(doc) == {"schema", "dataset", "metric", "metric_field", "metric_note", "reference", "groups", "gates",
                        "gates_passed", "notes"}
    assert (doc["schema"], doc["dataset"], doc["metric"], doc["reference"]) == (1, "cifar10", "final", "fine-tuned")
    sb = doc["groups"][2]
    assert set(sb) == {"level", "arm", "n", "acc_mean", "acc_std", "acc_values", "params", "flops", "epochs", "seeds",
                       "runs", "paths", "mismatch", "diff", "latency_ms", "varies",
                       "params_range", "flops_range", "epochs_range"}
    assert (sb["level"], sb["arm"], sb["n"], sb["params"], sb["flops"], sb["epochs"]) == (
        None, "scratch-B", 3, 1000, 1_000_000, 320)
    assert sb["acc_mean"] == pytest.approx(93.8) and sb["acc_std"] == pytest.approx(0.2)
    assert sb["acc_values"] == SB and sb["seeds"] == [0, 1, 2] and sb["mismatch"] == []
    assert sb["runs"] == ["scratch-B-0", "scratch-B-1", "scratch-B-2"]
    assert [p.rsplit("/", 1)[-1] for p in sb["paths"]] == sb["runs"]  # each run's directory, same order
    diff = sb["diff"]
    assert set(diff) == {"vs", "mean", "ci95", "p_value", "df", "note"}
    assert diff["vs"] == "fine-tuned" and diff["mean"] == pytest.approx(0.4) and diff["note"] is None
    assert isinstance(diff["ci95"], list) and diff["ci95"][0] < 0.4 < diff["ci95"][1]
    assert diff["p_value"] == pytest.approx(sps.ttest_ind(SB, FT, equal_var=False).pvalue)
    assert doc["groups"][1]["diff"] is None
    base = doc["groups"][0]
    assert base["acc_std"] is None and base["diff"]["ci95"] is None and base["diff"]["p_value"] is None
    assert doc["gates"] == [{"gate": "scratch-B >= fine-tuned", "passed": True, "left": pytest.approx(93.8),
                             "right": pytest.approx(93.4), "level": None}]
    assert doc["gates_passed"] is True and doc["notes"] == []


def test_mismatched_flops_and_repeated_seeds_are_flagged(tmp_path):
    runs = [make_run(tmp_path, "a", "scratch-B", 90.0, 0, flops=100), make_run(tmp_path, "b", "scratch-B", 91.0, 0,
                                                                                flops=300)]
    group = report(runs).groups[0]
    assert group.mismatch == ("flops", "seed") and group.flops == 200
    text = to_markdown(report(runs))
    assert "flops differ" in text and "seeds repeat" in text


@pytest.mark.parametrize(("gate", "passed"), [
    ("scratch-B >= fine-tuned", True), ("scratch-B > fine-tuned + 0.4", False), ("scratch-B > fine-tuned+0.39", True),
    ("ft <= scratch-B - 0.4", True), ("ft < scratch-B - 0.4", False), ("fine-tuned < scratch-B", True),
    ("scratch-B >= 93.8", True), ("scratch-B > 93.8", False), ("scratch-B < 94", True), ("scratch-B <= 93.79", False),
    ("Scratch-b≥FINETUNE-0.5", True), ("baseline >= fine-tuned + 0.6", True),
])
def test_gates_for_every_operator(classic, gate, passed):
    [result] = evaluate_gates(report(classic), [parse_gate(gate)])
    assert result.passed is passed and result.gate == gate and result.level is None


def test_parse_gate_forms():
    assert parse_gate("scratch-B >= fine-tuned - 0.5") == Gate("scratch-B >= fine-tuned - 0.5", "scratch-B", ">=",
                                                               "fine-tuned", -0.5)
    assert parse_gate("ticket > random + 1") == Gate("ticket > random + 1", "winning-ticket", ">", "random-init", 1.0)
    assert parse_gate("scratch-e < 95.5") == Gate("scratch-e < 95.5", "scratch-E", "<", None, 95.5)


@pytest.mark.parametrize("text", ["scratch-B", "scratch-B == fine-tuned", "scratch-B >= ", ">= 3",
                                  "scratch-B >= fine-tuned -", "scratch-B >= fine-tuned * 2", "scratch-B >= 9 5"])
def test_malformed_gates_show_the_expected_form(text):
    with pytest.raises(BadValueError, match="malformed gate .* expected 'ARM OP ARM ± POINTS'") as err:
        parse_gate(text)
    assert "\n" not in str(err.value)


def test_gate_on_unknown_or_absent_arm_is_an_error(classic):
    with pytest.raises(BadValueError, match="unknown arm 'scrach'"):
        parse_gate("scrach >= 3")
    with pytest.raises(BadValueError, match="names winning-ticket, which has no runs"):
        report(classic, gates=["ticket >= fine-tuned"])


def test_gate_must_hold_at_every_level(tmp_path):
    lv1, lv2 = {"round": 1}, {"round": 2}
    runs = arm_runs(tmp_path, "winning-ticket", [91.0, 91.2], level=lv1, prefix="wt1")
    runs += arm_runs(tmp_path, "random-init", [90.0, 90.2], level=lv1, prefix="ri1")
    runs += arm_runs(tmp_path, "winning-ticket", [89.0, 89.2], level=lv2, prefix="wt2")
    runs += arm_runs(tmp_path, "random-init", [90.0, 90.2], level=lv2, prefix="ri2")
    runs += arm_runs(tmp_path, "baseline", [93.0, 93.2])
    rep = report(runs, gates=["ticket >= random-init", "baseline >= 93"])
    assert [(r.gate, r.level, r.passed) for r in rep.gates] == [
        ("ticket >= random-init", lv1, True), ("ticket >= random-init", lv2, False),
        ("baseline >= 93", None, True)]  # the shared baseline is judged once, not once per level
    assert rep.gates_passed is False
    assert report(runs, gates=["ticket > baseline - 5"]).gates_passed is True  # baseline stands in per level


def test_no_finished_runs_and_mixed_datasets_are_errors(tmp_path):
    pending = make_run(tmp_path, "pending", "fine-tuned", 0.0, 0, finished=False)
    with pytest.raises(BadValueError, match=r"no finished runs to compare \(skipped 1 unfinished"):
        report([pending])
    with pytest.raises(BadValueError, match="no finished runs"):
        report([])
    runs = [make_run(tmp_path, "c10", "fine-tuned", 90.0, 0), make_run(tmp_path, "c100", "fine-tuned", 70.0, 1,
                                                                       dataset="cifar100")]
    with pytest.raises(BadValueError, match="runs from different datasets: cifar10, cifar100"):
        report(runs)


def test_skips_unfinished_prune_and_duplicate_runs(tmp_path, classic):
    extra = [make_run(tmp_path, "pending", "fine-tuned", 0.0, 9, finished=False),
             make_run(tmp_path, "pruned", "fine-tuned", 10.0, 9, stage="prune", with_arm=False), classic[0]]
    rep = report([*classic, *extra])
    assert [g.n for g in rep.groups] == [1, 5, 3]
    assert any("unfinished" in n for n in rep.notes) and any("prune" in n for n in rep.notes)
    assert any("given twice" in n for n in rep.notes)


def test_find_runs_walks_directories(tmp_path, classic):
    assert len(find_runs([tmp_path])) == len(classic)
    assert find_runs([classic[0].path])[0].path == classic[0].path
    with pytest.raises(ArtifactError):
        find_runs([tmp_path / "nowhere"])


def test_markdown_contains_the_expected_rows(classic):
    text = to_markdown(report(classic, gates=["scratch-B >= fine-tuned - 0.5"]))
    lines = text.splitlines()
    assert "| arm | n | accuracy % (mean ± std) | params | FLOPs (multiply-adds) | epochs | Δ vs fine-tuned (95 % CI; " \
           "p) |" in lines
    d = welch(SB, FT)
    assert (f"| scratch-B | 3 | 93.80 ± 0.20 | 1.00K | 1.00M | 320 | +0.40 [{d.ci95[0]:+.2f}, {d.ci95[1]:+.2f}]; "
            f"p={d.p_value:.3g} |") in lines
    assert "| fine-tuned | 5 | 93.40 ± 0.32 | 1.00K | 1.00M | 40 | reference |" in lines
    assert "| baseline | 1 | 94.00 ± n/a | 4.00K | 4.00M | 160 | +0.60, CI and p n/a (needs ≥ 2 seeds) |" in lines
    assert "| scratch-B >= fine-tuned - 0.5 | no level | 93.80 | 92.90 | pass |" in lines


def test_rich_table_renders_every_level_and_gate(tmp_path):
    level = {"round": 3, "remaining": 0.512}
    runs = arm_runs(tmp_path, "winning-ticket", [90.0, 90.4], level=level, prefix="wt")
    runs += arm_runs(tmp_path, "random-init", [89.0], level=level, prefix="ri")
    console = Console(file=io.StringIO(), width=250, record=True)
    render_table(console, report(runs, gates=["ticket > random-init + 2"]))
    out = console.export_text()
    assert "round=3, remaining=0.512" in out and "FLOPs (multiply-adds)" in out
    assert "vs random-init: +1.20, CI and p n/a (needs ≥ 2 seeds)" in out
    assert "FAIL" in out and "gates: 1 of 1 checks FAIL" in out


def test_plot_writes_png_and_svg(tmp_path, classic):
    rep = report(classic)
    png = plot(rep, tmp_path / "acc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    svg = plot(rep, tmp_path / "acc.svg")
    assert "<svg" in svg.read_text()


def test_plot_lottery_panel_and_bad_outputs(tmp_path):
    runs = []
    for k, remaining in enumerate([0.8, 0.64, 0.512]):
        level = {"round": k + 1, "remaining": remaining}
        runs += arm_runs(tmp_path / "runs", "winning-ticket", [90.0, 90.5], level=level, prefix=f"wt{k}")
        runs += arm_runs(tmp_path / "runs", "random-init", [89.0, 89.6], level=level, prefix=f"ri{k}")
    rep = report(runs)
    assert "<svg" in plot(rep, tmp_path / "lottery.svg").read_text()
    missing = tmp_path / "no-such-dir"
    with pytest.raises(OutputError, match="does not exist"):
        plot(rep, missing / "acc.png")
    assert not missing.exists()
    with pytest.raises(BadValueError, match=r"\.png or \.svg"):
        plot(rep, tmp_path / "acc.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lottery.svg", "runs"]


def test_every_json_field_is_documented(classic):
    doc_text = (Path(__file__).parent.parent / "docs" / "compare-json.md").read_text()
    doc = report(classic, gates=["scratch-B >= 90"]).to_dict()
    fields = set(doc) | set(doc["groups"][2]) | set(doc["groups"][2]["diff"]) | set(doc["gates"][0])
    assert not [f for f in sorted(fields) if f"| `{f}` |" not in doc_text]


def test_gate_whose_arms_never_meet_and_bad_arm_in_result(tmp_path):
    runs = arm_runs(tmp_path, "winning-ticket", [90.0, 91.0], level={"round": 1}, prefix="wt")
    runs += arm_runs(tmp_path, "random-init", [89.0, 90.0], level={"round": 2}, prefix="ri")
    with pytest.raises(BadValueError, match="never appear at the same level"):
        evaluate_gates(report(runs), ["ticket >= random-init"])
    bad = make_run(tmp_path, "odd", "fine-tuned", 90.0, 0)
    result = json.loads((bad.path / "result.json").read_text())
    (bad.path / "result.json").write_text(json.dumps({**result, "arm": "scratch-C"}))
    with pytest.raises(ArtifactError, match="unknown arm 'scratch-C'"):
        report([bad])
