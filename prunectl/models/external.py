"""Models from the torchvision and timm registries (`torchvision:resnet18`, `timm:convnext_atto`) as data.

The record is `Arch(family="torchvision" | "timm", config={"builder", "kwargs", "stem", "versions", "edits",
"shapes"})`. Building one is: a fresh instance from the library's own registry (never an import path, so a
record pulled from the Hub cannot run code), adapted to the dataset (input channels and classes, as timm's
`in_chans` / `num_classes` do; optionally a CIFAR-style 3x3 stride-1 stem without max-pool for small inputs),
then the pruning record replayed through Torch-Pruning's dependency graph: `edits` lists, per channel group
(named by its root layer), the channels it had and the kept indices in the original numbering. Every conv /
linear / norm shape is then checked against `shapes`. No weights are downloaded: `pretrained` is never passed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, ClassVar, cast

import torch
from torch import nn

from prunectl.core.arch import Arch
from prunectl.errors import ArtifactError, BadValueError, UnknownNameError
from prunectl.models.base import ArchModel, register_family

PREFIXES = ("torchvision", "timm")
STEMS = ("imagenet", "cifar")
# Builder keyword arguments a record may never carry: weights and checkpoints are loaded only by prunectl.
FORBIDDEN_KWARGS = frozenset({"weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                              "checkpoint_path", "num_classes", "in_chans", "progress"})
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise BadValueError("timm models need the optional extra: pip install 'prunectl[timm]'") from None
    return timm


def registry_names(library: str) -> list[str]:
    """The classification models `library` ("torchvision" or "timm") can build."""
    if library == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models(module=torchvision.models))
    return sorted(_timm().list_models())


def is_external(name: str) -> bool:
    return name.partition(":")[0] in PREFIXES and ":" in name


def versions(library: str) -> dict[str, str]:
    return {lib: metadata.version(dist) for lib, dist in
            ((library, library), ("torch_pruning", "torch-pruning"))}


def _check_builder(library: str, builder: str) -> None:
    if library not in PREFIXES:
        raise BadValueError(f"unknown model library '{library}' (known: {', '.join(PREFIXES)})")
    names = registry_names(library)
    if builder not in names:
        raise UnknownNameError(f"{library} model", builder, names)


def _check_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    def plain(v: Any) -> bool:
        return v is None or isinstance(v, bool | int | float | str) or (
            isinstance(v, list) and all(plain(x) for x in v))

    for key, value in kwargs.items():
        if key in FORBIDDEN_KWARGS:
            raise BadValueError(f"model option '{key}' is not allowed (prunectl sets classes and input channels; "
                                f"no weights are downloaded)")
        if not plain(value):
            raise BadValueError(f"model option '{key}' must be a number, string, bool or list of them")
    return dict(kwargs)


def external_arch(name: str, num_classes: int = 10, input_size: tuple[int, int, int] | None = None,
                  stem: str = "imagenet", **kwargs: Any) -> Arch:
    """The unpruned record of `torchvision:NAME` / `timm:NAME`; other options go to the library's builder.

    >>> external_arch("torchvision:resnet18", 10, (1, 28, 28), stem="cifar").config["builder"]
    'resnet18'
    """
    library, _, builder = name.partition(":")
    _check_builder(library, builder)
    if stem not in STEMS:
        raise BadValueError(f"stem must be one of {', '.join(STEMS)}, got '{stem}'")
    config = {"builder": builder, "kwargs": _check_kwargs(kwargs), "stem": stem, "versions": versions(library),
              "edits": []}
    size = cast(tuple[int, int, int], tuple(input_size or (3, 224, 224)))
    return Arch(library, config, num_classes, size, name=name)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _adapt(net: nn.Module, in_channels: int, stem: str) -> None:
    """Replace the first conv for `in_channels` (and, for the CIFAR stem, by a 3x3 stride-1 conv), and for the
    CIFAR stem the max-pool that follows it by an identity."""
    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children())]
    first = next((i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise BadValueError("this model has no conv layer to adapt to the input")
    path, conv = leaves[first][0], cast(nn.Conv2d, leaves[first][1])
    if stem == "cifar":
        new = nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
        for n, m in leaves[first + 1:first + 5]:
            if isinstance(m, nn.MaxPool2d):
                _replace(net, n, nn.Identity())
                break
    elif in_channels != conv.in_channels:
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                        conv.padding, conv.dilation, conv.groups, conv.bias is not None)  # type: ignore[arg-type]
    else:
        return
    _replace(net, path, new)


# User builders (`package.module:function`) this process may import: only ever added by the user's own code
# (`prunectl.engine.custom_model`) or environment, never by a record (a pulled or shared record names one only).
TRUST_ENV = "PRUNECTL_TRUST_BUILDERS"
TRUSTED_BUILDERS: set[str] = set()


def trusted(builder: str) -> bool:
    import os

    return builder in TRUSTED_BUILDERS or builder in os.environ.get(TRUST_ENV, "").split(",")


def user_network(builder: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """The user's builder, called with `kwargs` (only if trusted: see `TRUSTED_BUILDERS`)."""
    import importlib

    if not trusted(builder):
        raise BadValueError(f"this record builds its model with user code '{builder}'; allow it explicitly with "
                            f"{TRUST_ENV}={builder} or prunectl.engine.custom_model.trust_builder('{builder}')")
    module_name, _, function = builder.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as err:
        raise BadValueError(f"cannot import the model builder '{builder}': {err}") from None
    net = factory(**kwargs)
    if not isinstance(net, nn.Module):
        raise BadValueError(f"the model builder '{builder}' returned a {type(net).__name__}, not an nn.Module")
    return net


def fresh_network(family: str, config: Mapping[str, Any], num_classes: int,
                  input_size: tuple[int, int, int]) -> nn.Module:
    """The library's model, unpruned, adapted to the input and classes (weights from torch's global RNG)."""
    builder = str(config["builder"])
    if family == "module":  # the user's own builder: taken as it is (it sets its classes and input itself)
        return user_network(builder, dict(config.get("kwargs", {})))
    _check_builder(family, builder)
    kwargs = _check_kwargs(config.get("kwargs", {}))
    if family == "torchvision":
        import torchvision

        net = torchvision.models.get_model(builder, weights=None, num_classes=num_classes, **kwargs)
    else:
        net = _timm().create_model(builder, pretrained=False, num_classes=num_classes, in_chans=input_size[0],
                                   **kwargs)
    _adapt(net, input_size[0], str(config.get("stem", "imagenet")))
    return cast(nn.Module, net)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Weight shape of every conv / linear / norm layer (the record a rebuild is checked against)."""
    return {n: list(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear, *NORMS)) and getattr(m, "weight", None) is not None}


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The last layer producing the class scores (its outputs are never pruned)."""
    heads: list[nn.Module] = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    return heads[-1:]


def dependency_graph(model: nn.Module, input_size: tuple[int, int, int]) -> Any:
    """Torch-Pruning's dependency graph of `model`, traced on one all-zero example (torch's RNG is not used;
    the model's train / eval mode is kept)."""
    import torch_pruning as tp

    device = next(model.parameters()).device
    mode = model.training
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.DependencyGraph().build_dependency(model, torch.zeros((1, *input_size), device=device),
                                                         verbose=False)
    except (RuntimeError, TypeError, ValueError, IndexError, AssertionError) as err:
        raise BadValueError(f"cannot trace this model for pruning: {' '.join(str(err).split())[:200]}") from None
    finally:
        model.train(mode)


def prune_group(graph: Any, model: nn.Module, root: str, removed: list[int]) -> None:
    """Remove output channels `removed` of layer `root` and every layer coupled to them."""
    module = model.get_submodule(root)
    pruner = graph.get_pruner_of_module(module)
    group = graph.get_pruning_group(module, pruner.prune_out_channels, removed)
    group.prune(record_history=False)


def replay(model: nn.Module, edits: Sequence[Mapping[str, Any]], input_size: tuple[int, int, int]) -> None:
    """Cut `model` (fresh, unpruned) as the record's `edits` say."""
    if not edits:
        return
    graph = dependency_graph(model, input_size)
    for edit in edits:
        root, channels, keep = str(edit["group"]), int(edit["channels"]), [int(i) for i in edit["keep"]]
        try:
            module = model.get_submodule(root)
        except AttributeError:
            raise ArtifactError(f"the pruning record names layer '{root}', which this model does not have") from None
        have = graph.get_pruner_of_module(module).get_out_channels(module)
        if have != channels or not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= channels:
            raise ArtifactError(f"the pruning record of '{root}' (keep {len(keep)} of {channels}) does not fit the "
                                f"layer's {have} channels")
        removed = sorted(set(range(channels)) - set(keep))
        if removed:
            prune_group(graph, model, root, removed)


def check_shapes(model: nn.Module, shapes: Mapping[str, Any]) -> None:
    """One-line ArtifactError naming the first layer whose shape differs from the record."""
    have = layer_shapes(model)
    for name, shape in shapes.items():
        if name not in have:
            raise ArtifactError(f"rebuilt model has no layer '{name}' the record lists")
        if list(shape) != have[name]:
            raise ArtifactError(f"rebuilt layer '{name}' has shape {have[name]}, the record says {list(shape)}")
    extra = sorted(set(have) - set(shapes))
    if extra:
        raise ArtifactError(f"rebuilt model has layer '{extra[0]}', which the record does not list")


class ExternalModel(ArchModel):
    """A library model (`self.net`) built fresh, adapted and cut as its record says; `edits` is the record of
    the cuts so far (kept indices in the unpruned model's numbering), which `to_arch()` gives back."""

    family: ClassVar[str] = ""

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        config = dict(arch.config)
        self.base_config: dict[str, Any] = {k: config[k] for k in ("builder", "kwargs", "stem") if k in config}
        self.versions = dict(config.get("versions", {}))
        self.edits: list[dict[str, Any]] = [dict(e) for e in config.get("edits", [])]
        self.net = fresh_network(self.family, config, arch.num_classes, arch.input_size)
        now = versions("torch" if self.family == "module" else self.family)
        if self.versions and self.versions != now:
            warnings.warn(f"{arch.name or self.family}: recorded with {self.versions}, rebuilt with {now}; the "
                          f"layer shapes are checked", stacklevel=2)
        self.versions = now
        replay(self, self.edits, arch.input_size)
        if "shapes" in config:
            check_shapes(self, config["shapes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.net(x))

    def to_arch(self) -> Arch:
        config: dict[str, Any] = {**self.base_config, "versions": self.versions, "edits": self.edits}
        if self.edits:
            config["shapes"] = layer_shapes(self)
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)

    def reset_parameters(self) -> None:
        # PyTorch's default initialisation of every layer (the builders' own schemes live in their __init__,
        # which a scratch run gets anyway: it builds the record afresh).
        for m in self.modules():
            reset = getattr(m, "reset_parameters", None)
            if m is not self and callable(reset):
                reset()


@register_family
class TorchvisionModel(ExternalModel):
    family = "torchvision"


@register_family
class TimmModel(ExternalModel):
    family = "timm"


@register_family
class UserModule(ExternalModel):
    """The user's own nn.Module, built by a trusted `package.module:function` (see `prunectl.engine.custom_model`)."""

    family = "module"
