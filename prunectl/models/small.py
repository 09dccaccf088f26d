"""Small models for MNIST-sized inputs: `smallcnn` (a tiny CIFAR VGG), LeNet-5 and LeNet-300-100."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunectl.errors import BadValueError
from prunectl.models.base import Arch, ArchModel, register_family, register_model
from prunectl.models.cifar_vgg import cifar_vgg_arch
from prunectl.models.layers import as_width

MNIST_SIZE = (1, 28, 28)
SMALLCNN_CFG: list[int | str] = [16, "M", 32, "M", 64, "M", 128]


def widths(config: Any, key: str, count: int, family: str) -> list[int]:
    values = config.get(key)
    if not isinstance(values, list) or len(values) != count:
        raise BadValueError(f"{family}: {key} must be a list of {count} widths, got {values!r}")
    return [as_width(v, f"{family} {key}[{i}]") for i, v in enumerate(values)]


def mlp_head(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """fc1, relu1, fc2, relu2, ..., fc<k> (named, so FLOPs tables and state_dict keys read well)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(in_features, width)
        layers[f"relu{i}"] = nn.ReLU()
        in_features = width
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(in_features, num_classes)
    return nn.Sequential(layers)


def glorot_init(module: nn.Module) -> None:
    """Gaussian Glorot weights and zero biases, the LeNet init of the lottery-ticket paper (Frankle & Carbin)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@register_family
class LeNet5(ArchModel):
    """LeNet-5: conv1 (5x5, pad 2) ReLU max-pool, conv2 (5x5) ReLU max-pool, then fc1-fc2-fc3 on the flattened map.

    Config: `conv_widths` [conv1, conv2] and `fc_widths` [fc1, fc2] outputs. The flatten size follows the input
    (16 x 5 x 5 at 28x28), so inputs of 12 pixels and up work.

    >>> from prunectl.models import create_model
    >>> m = create_model("lenet5")
    >>> m(torch.zeros(2, 1, 28, 28)).shape, m.classifier.fc1.in_features
    (torch.Size([2, 10]), 400)
    """

    family = "lenet"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        convs = widths(arch.config, "conv_widths", 2, self.family)
        fcs = widths(arch.config, "fc_widths", 2, self.family)
        channels, height, width = arch.input_size
        if min(height, width) < 12:
            raise BadValueError(f"lenet: input {arch.input_size} is too small (need >= 12 pixels)")
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(channels, convs[0], 5, padding=2)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(convs[0], convs[1], 5)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
        ]))
        spatial = ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
        self.classifier = mlp_head(convs[1] * spatial, fcs, arch.num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def reset_parameters(self) -> None:
        glorot_init(self)

    def to_arch(self) -> Arch:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        config = {
            "conv_widths": [m.out_channels for m in convs],
            "fc_widths": [m.out_features for m in linears[:-1]],
        }
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


@register_family
class MLP(ArchModel):
    """Fully connected net on the flattened input: fc1, relu1, ..., fc<k> (LeNet-300-100 is hidden [300, 100]).

    >>> from prunectl.models import create_model
    >>> m = create_model("lenet300100")
    >>> [m.classifier.fc1.in_features, m.classifier.fc1.out_features, m.classifier.fc3.out_features]
    [784, 300, 10]
    """

    family = "mlp"

    def __init__(self, arch: Arch) -> None:
        super().__init__(arch)
        hidden = arch.config.get("hidden")
        if not isinstance(hidden, list):
            raise BadValueError(f"mlp: hidden must be a list of widths, got {hidden!r}")
        hidden = [as_width(v, f"mlp hidden[{i}]") for i, v in enumerate(hidden)]
        c, h, w = arch.input_size
        self.classifier = mlp_head(c * h * w, hidden, arch.num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))

    def reset_parameters(self) -> None:
        glorot_init(self)

    def to_arch(self) -> Arch:
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        config = {"hidden": [m.out_features for m in linears[:-1]]}
        return Arch(self.family, config, self.num_classes, self.input_size, name=self.arch_name)


@register_model("smallcnn")
def smallcnn(num_classes: int = 10, input_size: tuple[int, int, int] = MNIST_SIZE, head: str = "linear",
             cfg: Sequence[int | str] | None = None) -> Arch:
    """A tiny CIFAR VGG (16, M, 32, M, 64, M, 128, global pool, Linear): about 98 % on 4,000 MNIST digits."""
    return cifar_vgg_arch(SMALLCNN_CFG if cfg is None else cfg, "smallcnn", num_classes, input_size, head)


@register_model("lenet5")
def lenet5(num_classes: int = 10, input_size: tuple[int, int, int] = MNIST_SIZE,
           conv_widths: Sequence[int] = (6, 16), fc_widths: Sequence[int] = (120, 84)) -> Arch:
    """LeNet-5 (6 and 16 filters, 120 and 84 hidden units)."""
    config = {"conv_widths": list(conv_widths), "fc_widths": list(fc_widths)}
    return Arch(LeNet5.family, config, num_classes, input_size, name="lenet5")


@register_model("lenet300100")
def lenet300100(num_classes: int = 10, input_size: tuple[int, int, int] = MNIST_SIZE,
                hidden: Sequence[int] = (300, 100)) -> Arch:
    """LeNet-300-100, the lottery-ticket paper's MNIST MLP."""
    return Arch(MLP.family, {"hidden": list(hidden)}, num_classes, input_size, name="lenet300100")
