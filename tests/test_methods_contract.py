"""The contract every pruning method keeps, run over `list_methods()` x the small families (a new method or a new
family's examples join by themselves): the input is untouched, the output arch rebuilds, structured methods return a
smaller dense model equal to the masked one, unstructured ones a mask consistent with the weights, and a method
that does not apply to a family says which capability the model lacks, in one line."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from tinymodels import randomised, small_families, tiny_dataset

from prunectl.core.hparams import MethodTraining
from prunectl.errors import BadValueError
from prunectl.methods import Method, PruneContext, get_method, list_methods
from prunectl.methods.weight import WeightSettings
from prunectl.models import Arch, ArchModel, build_model
from prunectl.structure import CAPABILITIES, masked_model, offers

FAMILIES = small_families()


def trained_like(method_name: str, model: ArchModel) -> MethodTraining | None:
    """For a method that acts during training (`facts.trains`) with default training settings, what training
    with it leaves: its behaviour's start step applied to `model` (e.g. SFP's first mask) and the training record
    that `prune` reads from the context; None for other methods (and for required training settings)."""
    method = get_method(method_name)
    if not method.facts.trains or method.training_settings is None:
        return None
    try:
        settings = method.training_settings()
    except TypeError:  # a required training setting (slimming's sparsity): prune then sees a plain run
        return None
    method.training(settings, model).on_train_start(model)
    return MethodTraining(method_name, settings.to_dict(omit_defaults=True))


def settings_for(method_name: str) -> object:
    """The method's defaults, with ratio 0.5 where the method has a ratio (some have no default)."""
    cls = get_method(method_name).settings
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**({"ratio": 0.5} if "ratio" in names else {}))


def context_for(method_name: str, arch: Arch, note=lambda message: None) -> PruneContext:
    """Tiny data, and for a method that acts during training the record that the model was trained with it
    (its training defaults), as a run trained with the method would give it."""
    training = MethodTraining(method_name, {}) if get_method(method_name).facts.trains else None
    return PruneContext(data=tiny_dataset(arch), training=training, note=note)


@pytest.mark.parametrize("arch", [a for _, a in FAMILIES], ids=[k for k, _ in FAMILIES])
@pytest.mark.parametrize("method_name", list_methods())
def test_method_contract(method_name: str, arch: Arch) -> None:
    method = get_method(method_name)
    model = randomised(arch)
    try:
        training = trained_like(method_name, model)
    except BadValueError:  # the method cannot train this model either; its prune() must refuse it as well
        training = None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    notes: list[str] = []
    context = PruneContext(data=tiny_dataset(arch), training=training, note=notes.append)
    try:
        out = method.prune(model, settings_for(method_name), context)
    except BadValueError as err:
        message = str(err)
        assert "\n" not in message
        lacking = [c for c in CAPABILITIES.values() if (c.name in message or c.description in message)
                   and not offers(model, c.name)]
        assert lacking, f"{method_name} refused {arch.family} without naming a capability it lacks: {message}"
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the input model changed"
    assert all("\n" not in n for n in notes)
    pruned = out.model
    rebuilt = build_model(pruned.to_arch())
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.randn(4, *arch.input_size)
    pruned.eval()
    if method.structured:
        # A structured method may also keep a mask on what it cannot remove (SFP's residual-tied convs): whole
        # filters of layers that keep their width; the reference then has those filters zeroed as well.
        assert out.edit is not None
        smaller = sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
        # an edit that removes nothing (e.g. SSS on a model whose training zeroed no branch) leaves the size
        assert smaller if (out.edit.drop or out.edit.keep) else pruned.to_arch().same_structure(model.to_arch())
        # A method that rewrites kept weights (reconstruction) gives the full-size model with them applied.
        source = copy.deepcopy(out.reference if out.reference is not None else model)
        assert source.to_arch().same_structure(model.to_arch())
        if out.mask:
            src_params, params = dict(source.named_parameters()), dict(pruned.named_parameters())
            for name, mask in out.mask.items():
                assert mask.shape == params[name].shape and torch.all(params[name][mask == 0] == 0)
                rows = mask.flatten(1)
                assert torch.all((rows == 0).all(1) | (rows == 1).all(1)), f"{name}: a mask of whole filters"
                assert mask.shape[0] == src_params[name].shape[0], f"{name}: a masked layer keeps its width"
                with torch.no_grad():
                    src_params[name][(rows == 0).all(1)] = 0
        reference = masked_model(source, out.edit)
        with torch.no_grad():
            assert torch.allclose(pruned(x), reference(x), atol=1e-5)
    else:
        assert out.edit is None and out.mask
        params = dict(pruned.named_parameters())
        original = dict(model.named_parameters())
        for name, mask in out.mask.items():
            assert mask.shape == params[name].shape
            assert torch.all((mask == 0) | (mask == 1))
            assert torch.all(params[name][mask == 0] == 0)
            assert torch.equal(params[name], original[name] * mask)
        assert pruned.to_arch().same_structure(model.to_arch())


@pytest.mark.parametrize("method_name", list_methods())
def test_every_method_applies_somewhere_and_refuses_somewhere_else_by_capability(method_name: str) -> None:
    """Keeps the contract above from passing vacuously: each method prunes some small family."""
    applied = []
    for key, arch in FAMILIES:
        try:
            model = randomised(arch)
            training = trained_like(method_name, model)
            get_method(method_name).prune(model, settings_for(method_name),
                                          PruneContext(data=tiny_dataset(arch), training=training))
            applied.append(key)
        except BadValueError:
            pass
    assert applied


def test_a_method_that_claims_to_train_must_declare_its_training_settings():
    from prunectl.methods.base import MethodFacts, register_method

    with pytest.raises(TypeError, match="facts.trains"):
        @register_method
        class Liar(Method):  # noqa: F841 - registration is the test
            facts = MethodFacts(name="liar", structured=False, summary="-", citation="-", trains=True)
            settings = WeightSettings

            def prune(self, model, settings, context):
                raise AssertionError("never called")
    assert "liar" not in list_methods()
