"""Pinned run ids: a refactor that changes the canonical JSON of an existing spec orphans users' run directories
and the shipped zoo entries. The literals below were computed by the code before training behaviours existed;
if one of these tests fails, do not update the literal: restore the old canonical form (or bump SCHEMA_VERSION
deliberately, with a migration)."""

from __future__ import annotations

import json

from prunectl import paths
from prunectl.core.hparams import TrainSpec
from prunectl.core.spec import spec_from_record
from prunectl.engine.prune import PruneSpec
from prunectl.engine.train import baseline_spec
from prunectl.models import Arch
from prunectl.paths import zoo_root

PLAIN_ID = "6803c1032d51"  # baseline_spec("smallcnn", "mnist5k", epochs=2)
SLIMMING_ID = "7627950df142"  # the same, trained with Network Slimming's penalty s = 1e-4
PRUNE_ID = "92088b6f9500"  # l1-norm, ratio 0.5, of the plain baseline
SCRATCH_B_ID = "b9369ec55c2b"  # a scratch-B run of that pruned architecture (hand-built budget record)

# spec.json "spec" blocks exactly as the code before training behaviours wrote them (`"sparsity"` always there).
OLD_PLAIN_RECORD = {
    "arch": {"config": {"cfg": [16, "M", 32, "M", 64, "M", 128], "head": "linear"}, "family": "cifar_vgg",
             "input_size": [1, 28, 28], "name": "smallcnn", "num_classes": 10, "schema": 1},
    "augment": True, "budget": {}, "dataset": "mnist5k", "density_scaled_init": False, "init": "random",
    "masked": False, "optim": {"batch_size": 64, "lr": 0.1, "momentum": 0.9, "nesterov": False,
                               "weight_decay": 0.0001},
    "parent": None, "rewind_to": "init", "save_init": False,
    "schedule": {"epochs": 2, "gamma": 0.1, "milestones": [0.5, 0.75], "warmup_epochs": 0, "warmup_lr": None},
    "seed": 0, "snapshot_epochs": [], "sparsity": 0.0, "stage": "train",
}
OLD_SLIMMING_RECORD = {**OLD_PLAIN_RECORD, "sparsity": 0.0001}


def _scratch_b() -> TrainSpec:
    """What engine/derive.py's scratch_spec builds for budget B (fields given explicitly, no run needed)."""
    plain = baseline_spec("smallcnn", "mnist5k", epochs=2)
    arch = Arch("cifar_vgg", {"cfg": [8, "M", 16, "M", 32, "M", 64], "head": "linear"}, 10, (1, 28, 28),
                name="smallcnn-l1-0.5")
    record = {"budget": "B", "rule": "int(2 × 2.0000) = 4", "epochs": 4, "reference": PLAIN_ID,
              "reference_epochs": 2, "finetune_epochs_added": 0, "flops_reference": 1000, "flops_pruned": 500,
              "flops_ratio": 2.0, "sparse_flops": False}
    return TrainSpec(arch=arch, dataset="mnist5k", optim=plain.optim, schedule=plain.schedule.replace(epochs=4),
                     seed=0, stage="scratch-b", init="random", parent=PRUNE_ID, masked=False, budget=record)


def test_pinned_ids_of_a_plain_a_slimming_a_prune_and_a_scratch_b_spec():
    assert baseline_spec("smallcnn", "mnist5k", epochs=2).spec_hash() == PLAIN_ID
    assert baseline_spec("smallcnn", "mnist5k", epochs=2, sparsity=1e-4).spec_hash() == SLIMMING_ID
    prune = PruneSpec(parent=PLAIN_ID, method="l1-norm", settings={"ratio": 0.5}, dataset="mnist5k", seed=0)
    assert prune.spec_hash() == PRUNE_ID
    assert _scratch_b().spec_hash() == SCRATCH_B_ID


def test_old_spec_records_load_with_the_same_ids():
    plain = spec_from_record({"kind": "TrainSpec", "spec": OLD_PLAIN_RECORD})
    slimming = spec_from_record({"kind": "TrainSpec", "spec": OLD_SLIMMING_RECORD})
    assert plain.spec_hash() == PLAIN_ID
    assert slimming.spec_hash() == SLIMMING_ID
    assert plain == baseline_spec("smallcnn", "mnist5k", epochs=2)
    assert slimming == baseline_spec("smallcnn", "mnist5k", epochs=2, sparsity=1e-4)


def test_every_shipped_zoo_run_record_keeps_its_id():
    """The zoo's run directories (written by the code before training behaviours, `"sparsity": 0.0` in each
    TrainSpec record): each record, and each ancestor in its lineage, must still hash to its stored id."""
    records = []
    for folder in sorted((zoo_root() / "weights").iterdir()):
        records.append(json.loads((folder / paths.SPEC).read_text()))
        if (folder / paths.LINEAGE).is_file():
            records.extend(json.loads((folder / paths.LINEAGE).read_text()))
    assert any(r["kind"] == "TrainSpec" for r in records) and any(r["kind"] == "PruneSpec" for r in records)
    for record in records:
        assert spec_from_record(record).spec_hash() == record["id"], record["id"]
