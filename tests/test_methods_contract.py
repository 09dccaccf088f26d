"""The contract every pruning method keeps, run over `list_methods()` x the small families (a new method or a new
family's examples join by themselves): the input is untouched, the output arch rebuilds, structured methods return a
smaller dense model equal to the masked one, unstructured ones a mask consistent with the weights, and a method
that does not apply to a family says which capability the model lacks, in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tinymodels import randomised, small_families, tiny_dataset

from prunectl.errors import BadValueError
from prunectl.methods import Method, PruneContext, get_method, list_methods
from prunectl.methods.weight import WeightSettings
from prunectl.models import Arch, build_model
from prunectl.structure import CAPABILITIES, masked_model, offers

FAMILIES = small_families()


def settings_for(method_name: str) -> object:
    """The method's defaults, with ratio 0.5 where the method has a ratio (some have no default)."""
    cls = get_method(method_name).settings
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**({"ratio": 0.5} if "ratio" in names else {}))


@pytest.mark.parametrize("arch", [a for _, a in FAMILIES], ids=[k for k, _ in FAMILIES])
@pytest.mark.parametrize("method_name", list_methods())
def test_method_contract(method_name: str, arch: Arch) -> None:
    method = get_method(method_name)
    model = randomised(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    notes: list[str] = []
    context = PruneContext(data=tiny_dataset(arch), note=notes.append)
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
        assert out.mask is None and out.edit is not None
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
        # A method that rewrites kept weights (reconstruction) gives the full-size reference with them applied.
        reference = out.reference if out.reference is not None else masked_model(model, out.edit)
        assert reference.to_arch().same_structure(model.to_arch())
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
            get_method(method_name).prune(randomised(arch), settings_for(method_name),
                                          PruneContext(data=tiny_dataset(arch)))
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
