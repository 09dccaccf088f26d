"""Specs: canonical JSON, defaults omitted from hashes, exact rebuild, validation, pinned run ids."""

from __future__ import annotations

import pytest

from prunectl.core.hparams import MethodTraining, OptimSpec, ScheduleSpec, TrainSpec
from prunectl.core.spec import spec_from_record
from prunectl.engine.train import baseline_spec
from prunectl.errors import BadValueError
from prunectl.models import default_arch


def _spec(**kw) -> TrainSpec:
    return TrainSpec(arch=default_arch("lenet300100"), dataset="mnist5k", **kw)


def test_round_trip_through_json_rebuilds_the_exact_spec():
    spec = _spec(optim=OptimSpec(lr=0.05, nesterov=True), schedule=ScheduleSpec(epochs=7, milestones=(0.3,)),
                 seed=4, budget={"rule": "x", "epochs": 7})
    again = TrainSpec.from_json(spec.to_json())
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    assert spec_from_record({"kind": "TrainSpec", "spec": spec.to_dict()}) == spec


def test_defaults_are_omitted_so_new_defaulted_fields_keep_old_hashes():
    spec = _spec(seed=3)
    canonical = spec.to_dict(omit_defaults=True)
    assert canonical["seed"] == 3
    assert "optim" not in canonical and "sparsity" not in canonical and "training" not in canonical
    assert _spec(optim=OptimSpec()).spec_hash() == _spec().spec_hash()


def test_every_field_changes_the_hash():
    base = _spec().spec_hash()
    variants = [_spec(seed=1), _spec(training=MethodTraining("slimming", {"sparsity": 1e-4})), _spec(optim=OptimSpec(lr=0.01)),
                _spec(schedule=ScheduleSpec(epochs=3)), _spec(stage="scratch-e")]
    hashes = {v.spec_hash() for v in variants}
    assert base not in hashes and len(hashes) == len(variants)


def test_pinned_hashes_so_a_refactor_cannot_orphan_old_runs():
    # If this fails, existing run directories would no longer be found: bump SCHEMA_VERSION deliberately instead.
    assert ScheduleSpec(epochs=3).spec_hash() == "48872f053ac7"
    assert OptimSpec(lr=0.05).spec_hash() == "e7beef818c6f"


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: OptimSpec(lr=0), "learning rate"),
        (lambda: OptimSpec(batch_size=0), "batch size"),
        (lambda: ScheduleSpec(epochs=0), "epochs"),
        (lambda: ScheduleSpec(milestones=(0.8, 0.2)), "increasing"),
        (lambda: _spec(init="inherit"), "needs a parent"),
        (lambda: baseline_spec("lenet300100", "mnist5k", sparsity=-1.0), "sparsity"),
    ],
)
def test_bad_values_raise_one_line_errors(build, message):
    with pytest.raises(BadValueError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_step_schedule_matches_the_papers():
    cifar = ScheduleSpec(epochs=160)
    assert cifar.milestone_epochs() == [80, 120]
    assert cifar.lr_at(79, 0.1) == pytest.approx(0.1)
    assert cifar.lr_at(80, 0.1) == pytest.approx(0.01)
    assert cifar.lr_at(159, 0.1) == pytest.approx(0.001)
    sfp = ScheduleSpec(epochs=200, milestones=(0.3, 0.6, 0.8), gamma=0.2, warmup_epochs=1, warmup_lr=0.01)
    assert sfp.lr_at(0, 0.1) == pytest.approx(0.01)
    assert sfp.lr_at(1, 0.1) == pytest.approx(0.1)
    assert sfp.milestone_epochs() == [60, 120, 160]
    assert sfp.lr_at(160, 0.1) == pytest.approx(0.1 * 0.2**3)
    assert ScheduleSpec.constant(40).lr_at(39, 0.001) == pytest.approx(0.001)
