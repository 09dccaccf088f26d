"""compare groups what belongs together: rewind points, scratch runs from an extracted arch.json, per-seed
architectures of global-threshold methods, a mixed store filtered by --dataset, the baseline in every table."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prunectl import engine
from prunectl.cli.app import app
from prunectl.cli.compare_render import to_markdown
from prunectl.engine.compare import report
from prunectl.engine.lottery import LotterySettings, lottery
from prunectl.errors import BadValueError
from tests.test_compare import arm_runs

runner = CliRunner()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    spec = engine.baseline_spec("lenet5", "mnist5k", epochs=2, seed=3).replace(save_init=True, snapshot_epochs=(1,))
    return engine.train(spec, out=tmp_path_factory.mktemp("b") / "base")


def test_compare_separates_init_and_late_rewound_tickets(baseline):
    runs = []
    for rewind in ("init", "epoch:1"):
        runs += lottery(baseline, LotterySettings(rounds=1, rate=0.5, rewind=rewind)).arm_runs()
    rep = report(runs, reference="random-init")
    tickets = [g for g in rep.groups if g.arm == "winning-ticket"]
    assert len(tickets) == 2
    rewinds = sorted(str(g.level.get("rewind")) for g in tickets)
    assert rewinds == ["None", "epoch:1"]
    assert all(g.level["round"] == 1 for g in tickets)
    # the round-1 control is one run (the same mask and seed for both rewind points) and is each ticket's control
    controls = [g for g in rep.groups if g.arm == "random-init"]
    assert len(controls) == 1 and controls[0].n == 1
    assert all(g.vs == "random-init" and g.diff is not None for g in tickets)
    text = to_markdown(rep)
    assert text.count("| random-init |") == 2  # it stands in at the late-rewound ticket's level too


def test_a_scratch_run_from_an_extracted_arch_keeps_the_level_of_its_source(baseline, tmp_path):
    pruned = engine.prune(baseline, engine.prune_spec(baseline, "l1-norm", {"ratio": 0.5}), latency=None)
    arch_file = tmp_path / "arch.json"
    engine.extract_arch(pruned, arch_file)
    from_dir = runner.invoke(app, ["scratch", str(pruned.path), "-r", str(baseline.path), "-b", "E", "--json"])
    from_file = runner.invoke(app, ["scratch", str(arch_file), "-r", str(baseline.path), "-b", "E", "--json"])
    assert from_dir.exit_code == 0, from_dir.output
    assert from_file.exit_code == 0, from_file.output
    level = json.loads(from_dir.stdout)["level"]
    assert level == {"method": "l1-norm", "ratio": 0.5}
    assert json.loads(from_file.stdout)["level"] == level


def test_per_seed_architectures_of_a_global_threshold_method_are_a_range_not_a_mismatch(tmp_path):
    slim = {"method": "slimming", "ratio": 0.7}
    runs = []
    for i, params in enumerate((1000, 1100, 1300)):
        runs += arm_runs(tmp_path, "fine-tuned", [93.0 + i / 10], level=slim, prefix=f"slim{i}", params=params,
                         flops=params * 1000)
    for i in range(3):  # seeds 0, 1, 2
        runs[i] = _reseed(runs[i], i)
    l1 = {"method": "l1-norm", "ratio": 0.5}
    runs += [_reseed(r, i) for i, r in enumerate(
        arm_runs(tmp_path, "scratch-B", [92.0], level=l1, prefix="l1a", params=500)
        + arm_runs(tmp_path, "scratch-B", [92.1], level=l1, prefix="l1b", params=600))]
    rep = report(runs)
    slim_group = next(g for g in rep.groups if g.level == slim)
    assert slim_group.varies == ("params", "flops") and slim_group.mismatch == ()
    assert slim_group.params_range == (1000, 1300) and slim_group.flops_range == (1_000_000, 1_300_000)
    l1_group = next(g for g in rep.groups if g.level == l1)
    assert l1_group.mismatch == ("params",) and l1_group.varies == ()
    text = to_markdown(rep)
    assert "1.13K (1.00K–1.30K)" in text and "from the trained weights" in text
    assert "550 (mean; differs!)" in text


def test_scratch_b_epochs_of_per_seed_architectures_are_a_range_and_only_there(tmp_path):
    sss = {"method": "sss", "gamma": 0.15}
    runs = []
    for arm in ("fine-tuned", "scratch-B"):
        for i, (params, epochs) in enumerate(((1000, 5), (1100, 6), (1300, 9))):
            made = arm_runs(tmp_path, arm, [90.0 + i], level=sss, prefix=f"{arm}{i}", params=params,
                            flops=params * 1000, epochs=epochs if arm == "scratch-B" else 1 + i)
            runs += [_reseed(r, i) for r in made]
    rep = report(runs)
    scratch_b = next(g for g in rep.groups if g.arm == "scratch-B")
    assert scratch_b.varies == ("params", "flops", "epochs") and scratch_b.mismatch == ()
    assert scratch_b.epochs_range == (5, 9)
    fine_tuned = next(g for g in rep.groups if g.arm == "fine-tuned")  # its epochs are a setting: a real mismatch
    assert fine_tuned.varies == ("params", "flops") and fine_tuned.mismatch == ("epochs",)
    text = to_markdown(rep)
    assert "6.67 (5–9)" in text and "scratch-B's epochs follow from its FLOPs" in text


def _reseed(run, seed):
    path = run.path / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "seed": seed}))
    return run


def test_a_mixed_store_is_filtered_by_dataset(tmp_path):
    runs = arm_runs(tmp_path, "baseline", [94.0, 94.2], dataset="cifar10")
    runs += arm_runs(tmp_path, "fine-tuned", [70.0], dataset="cifar100", prefix="c100")
    with pytest.raises(BadValueError, match="--dataset"):
        report(runs)
    rep = report(runs, dataset="cifar10")
    assert rep.dataset == "cifar10" and [g.n for g in rep.groups] == [2]
    assert any("left out 1 run" in n for n in rep.notes)
    with pytest.raises(BadValueError, match="no finished runs of dataset 'svhn'"):
        report(runs, dataset="svhn")
    cli = runner.invoke(app, ["compare", str(tmp_path), "--dataset", "cifar100", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["dataset"] == "cifar100"


def test_the_baseline_is_a_row_of_every_levels_table(tmp_path):
    runs = arm_runs(tmp_path, "baseline", [94.0])
    for ratio in (0.3, 0.5):
        runs += arm_runs(tmp_path, "fine-tuned", [93.0], level={"method": "l1-norm", "ratio": ratio},
                         prefix=f"ft{ratio}")
    text = to_markdown(report(runs))
    assert text.count("| baseline |") == 2
    assert "### no level" not in text and "### method=l1-norm, ratio=0.3" in text


def test_a_recipes_paper_numbers_are_reference_rows(tmp_path):
    from prunectl.cli.recipes import paper_reference

    assert paper_reference({"source": "Liu et al. 2019"}) is None
    paper = paper_reference({"source": "Table 1", "accuracy": {"ft": 93.41, "scratch-B": 93.78, "random-init": 1}})
    assert paper == {"source": "Table 1", "accuracy": {"fine-tuned": 93.41, "scratch-B": 93.78, "random-init": 1.0}}
    runs = arm_runs(tmp_path, "baseline", [94.0]) + arm_runs(tmp_path, "fine-tuned", [93.0, 93.2])
    text = to_markdown(report(runs), paper)
    assert "| paper: fine-tuned |  | 93.41 |" in text and "reference: Table 1" in text
    assert "paper: scratch-B" not in text  # no scratch-B runs: no row to compare with


def test_a_plot_of_one_level_has_labelled_points(tmp_path):
    from prunectl.engine.plot import _figure

    runs = arm_runs(tmp_path, "baseline", [94.0], flops=4_000_000)
    runs += arm_runs(tmp_path, "fine-tuned", [93.0, 93.2], level={"method": "l1-norm"}, flops=2_000_000)
    ax = _figure(report(runs)).axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["baseline 94.00", "fine-tuned 93.10"]
    lo, hi = ax.get_xlim()
    assert lo < 2_000_000 and hi > 4_000_000
