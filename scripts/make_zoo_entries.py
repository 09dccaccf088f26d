"""Regenerate zoo/entries/*.json: the papers' architectures (docs/architectures.md) with counted params/FLOPs.

Run from the repository root: ``python scripts/make_zoo_entries.py [ZOO_ROOT]``. An entry that already exists
keeps its `weights` and `measured` fields (those come from `export_run`), so regenerating never drops weights.
"""

from __future__ import annotations

import sys
from typing import Any

from prunectl.core.flops import count
from prunectl.core.io import read_json
from prunectl.engine.zoo import ZooEntry, entry_file, write_entry, zoo_root
from prunectl.models import Arch, build_model
from prunectl.models.cifar_resnet import cifar_resnet_arch
from prunectl.models.cifar_vgg import VGG_CFGS

IMAGENET = (1000, (3, 224, 224))
CIFAR10 = (10, (3, 32, 32))
SEED = "github.com/Eric-mingjie/rethinking-network-pruning"
L1_SOURCE = "Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017); widths per docs/protocols.md"
THINET_SOURCE = "Luo et al., ThiNet (ICCV 2017); the published architecture as the seed trains it, docs/architectures.md"
CP_SOURCE = "He et al., Channel Pruning (ICCV 2017); the published architecture as the seed trains it, docs/architectures.md"
SSS_SOURCE = "Huang & Wang, Sparse Structure Selection (ECCV 2018); the published architecture, docs/architectures.md"
BASE_SOURCE = "The unpruned baseline of Li et al. (ICLR 2017) as in the seed's cifar/l1-norm-pruning models"

# L1-norm (docs/protocols.md): prune ratio per stage and the conv ids left whole (stem is 1, block k's first conv is 2k).
L1_CIFAR = {
    ("resnet56", "A"): ((0.1, 0.1, 0.1), {16, 20, 38, 54}),
    ("resnet56", "B"): ((0.6, 0.3, 0.1), {16, 18, 20, 34, 38, 54}),
    ("resnet110", "A"): ((0.5, 0.0, 0.0), {36}),
    ("resnet110", "B"): ((0.5, 0.4, 0.3), {36, 38, 74}),
}
L1_RESNET34 = {"A": (0.3, 0.3, 0.3, 0.0), "B": (0.5, 0.6, 0.4, 0.0)}
SKIP34 = {2, 8, 14, 16, 26, 28, 30, 32}
VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]
THINET_RESNET = {30: (19, 38, 76, 153), 50: (32, 64, 128, 256), 70: (44, 89, 179, 358)}
VGG_THINET_CONV = [32, 32, "M", 64, 64, "M", 128, 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
VGG_THINET_TINY = [16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 256]
VGG_5X = [24, 22, "M", 41, 51, "M", 108, 89, 111, "M", 184, 276, 228, "M", 512, 512, 512, "M"]
RESNET50_2X = [  # per block (input channels kept, conv1, conv2)
    [(35, 64, 55), (101, 51, 39), (97, 50, 37)],
    [(144, 128, 106), (205, 105, 72), (198, 105, 72), (288, 128, 110)],
    [(278, 256, 225), (418, 209, 147), (407, 204, 158), (423, 212, 155), (412, 211, 148), (595, 256, 213)],
    [(606, 512, 433), (1222, 512, 437), (1147, 512, 440)],
]
SSS = {  # per stage: (blocks whose residual branch remains, whether the first block keeps its branch)
    26: [(0, False), (2, False), (5, False), (1, True)],
    32: [(1, False), (4, True), (4, True), (1, True)],
    41: [(0, False), (4, True), (6, True), (3, True)],
}
RESNET50_DEPTHS = (3, 4, 6, 3)
STAGE_WIDTHS = [64, 128, 256, 512]


def seed_accuracy(readme: str, top1: dict[str, float], top5: dict[str, float]) -> dict[str, Any]:
    """Top-1/top-5 (%) per training arm, exactly as the seed's README table gives them."""
    return {"metric": "top-1 %", "top1": top1, "top5": top5,
            "citation": f"{SEED}, {readme} (Models table; ImageNet val, resize 256, centre crop 224)"}


PAPER = {  # only the seed repository's README tables; CIFAR READMEs there give no numbers
    "resnet34-a-imagenet": seed_accuracy("imagenet/l1-norm-pruning/README.md",
                                         {"fine-tuned": 72.56, "scratch-E": 72.77, "scratch-B": 73.08},
                                         {"fine-tuned": 90.99, "scratch-E": 91.20, "scratch-B": 91.29}),
    "resnet34-b-imagenet": seed_accuracy("imagenet/l1-norm-pruning/README.md",
                                         {"fine-tuned": 72.29, "scratch-E": 72.55, "scratch-B": 72.84},
                                         {"fine-tuned": 90.72, "scratch-E": 91.07, "scratch-B": 91.19}),
    "vgg16-thinet-conv-imagenet": seed_accuracy("imagenet/thinet/README.md", {"scratch-E": 68.76, "scratch-B": 71.72},
                                                {"scratch-E": 88.71, "scratch-B": 90.34}),
    "vgg16-thinet-gap-imagenet": seed_accuracy("imagenet/thinet/README.md", {"scratch-E": 66.85, "scratch-B": 68.66},
                                               {"scratch-E": 87.07, "scratch-B": 88.13}),
    "vgg16-thinet-tiny-imagenet": seed_accuracy("imagenet/thinet/README.md", {"scratch-E": 57.15, "scratch-B": 59.93},
                                                {"scratch-E": 79.92, "scratch-B": 82.07}),
    "thinet30-resnet50-imagenet": seed_accuracy("imagenet/thinet/README.md", {"scratch-E": 70.91, "scratch-B": 71.57},
                                                {"scratch-E": 90.14, "scratch-B": 90.49}),
    "thinet50-resnet50-imagenet": seed_accuracy("imagenet/thinet/README.md", {"scratch-E": 73.31, "scratch-B": 73.90},
                                                {"scratch-E": 91.49, "scratch-B": 91.98}),
    "thinet70-resnet50-imagenet": seed_accuracy("imagenet/thinet/README.md", {"scratch-E": 74.42, "scratch-B": 75.14},
                                                {"scratch-E": 92.07, "scratch-B": 92.34}),
    "vgg16-5x-imagenet": seed_accuracy("imagenet/regression-pruning/README.md",
                                       {"scratch-E": 68.05, "scratch-B": 71.00}, {"scratch-E": 88.15, "scratch-B": 89.96}),
    "resnet50-2x-imagenet": seed_accuracy("imagenet/regression-pruning/README.md",
                                          {"scratch-E": 71.26, "scratch-B": 74.58},
                                          {"scratch-E": 90.68, "scratch-B": 92.23}),
    "sss-resnet26-imagenet": seed_accuracy("imagenet/sparse-structure-selection/README.md",
                                           {"scratch-E": 72.31, "scratch-B": 73.41},
                                           {"scratch-E": 90.90, "scratch-B": 91.39}),
    "sss-resnet32-imagenet": seed_accuracy("imagenet/sparse-structure-selection/README.md",
                                           {"scratch-E": 73.79, "scratch-B": 74.67},
                                           {"scratch-E": 91.80, "scratch-B": 92.22}),
    "sss-resnet41-imagenet": seed_accuracy("imagenet/sparse-structure-selection/README.md",
                                           {"scratch-E": 75.70, "scratch-B": 76.17},
                                           {"scratch-E": 92.74, "scratch-B": 92.90}),
}


def keep(channels: int, ratio: float) -> int:
    return int(channels * (1 - ratio))


def l1_cifar_mids(depth: int, ratios: tuple[float, ...], skip: set[int]) -> list[list[int]]:
    n = (depth - 2) // 6
    return [[w if 2 * (s * n + b + 1) in skip else keep(w, ratios[s]) for b in range(n)]
            for s, w in enumerate((16, 32, 64))]


def resnet34_blocks(ratios: tuple[float, ...]) -> list[list[dict[str, Any]]]:
    blocks, k = [], 0
    for s, (w, n) in enumerate(zip(STAGE_WIDTHS, (3, 4, 6, 3), strict=True)):
        stage = []
        for _ in range(n):
            k += 1
            stage.append({"mid": [w if 2 * k in SKIP34 else keep(w, ratios[s])]})
        blocks.append(stage)
    return blocks


def imagenet_resnet(kind: str, blocks: list[list[dict[str, Any]]]) -> Arch:
    config = {"block": kind, "stem_width": 64, "stage_widths": STAGE_WIDTHS, "blocks": blocks}
    return Arch("imagenet_resnet", config, IMAGENET[0], IMAGENET[1])


def sss_blocks(units: list[tuple[int, bool]]) -> list[list[dict[str, Any]]]:
    """ResNet-50's blocks with branches removed: first block per flag, then the remaining ones, then identities."""
    blocks = []
    for (remain, first), w, n in zip(units, STAGE_WIDTHS, RESNET50_DEPTHS, strict=True):
        with_branch = [first] + [True] * (remain - 1 if first else remain)
        with_branch += [False] * (n - len(with_branch))
        blocks.append([{"mid": [w, w]} if b else {"branch": False} for b in with_branch])
    return blocks


def imagenet_vgg(cfg: list[Any], head: str) -> Arch:
    return Arch("imagenet_vgg", {"cfg": cfg, "batch_norm": False, "head": head}, IMAGENET[0], IMAGENET[1])


def definitions() -> list[dict[str, Any]]:
    """(name, dataset, method, description, source, arch) of every entry."""
    out: list[dict[str, Any]] = []

    def add(name: str, dataset: str, method: str, description: str, source: str, arch: Arch) -> None:
        out.append({"name": name, "dataset": dataset, "method": method, "description": description,
                    "source": source, "arch": Arch.from_dict({**arch.to_dict(), "name": name})})

    vgg = {"head": "l1"}
    add("vgg16-cifar10", "cifar10", "baseline", "VGG-16 for CIFAR with the L1-norm paper's 512-BN-ReLU head",
        BASE_SOURCE, Arch("cifar_vgg", {"cfg": VGG_CFGS["vgg16"], **vgg}, *CIFAR10))
    add("vgg16-a-cifar10", "cifar10", "l1-norm", "VGG-16-A: L1-norm filter pruning of VGG-16 on CIFAR-10",
        L1_SOURCE, Arch("cifar_vgg", {"cfg": VGG16_A, **vgg}, *CIFAR10))
    for depth in (56, 110):
        add(f"resnet{depth}-cifar10", "cifar10", "baseline", f"ResNet-{depth} for CIFAR (parameter-free shortcuts)",
            BASE_SOURCE, cifar_resnet_arch(depth, *CIFAR10))
        for variant in ("A", "B"):
            ratios, skip = L1_CIFAR[(f"resnet{depth}", variant)]
            mids = l1_cifar_mids(depth, ratios, skip)
            add(f"resnet{depth}-{variant.lower()}-cifar10", "cifar10", "l1-norm",
                f"ResNet-{depth}-{variant}: L1-norm pruning of each block's first conv, stage ratios {ratios}",
                L1_SOURCE, cifar_resnet_arch(depth, *CIFAR10, mid_widths=mids))
    for variant, stage_ratios in L1_RESNET34.items():
        add(f"resnet34-{variant.lower()}-imagenet", "imagenet", "l1-norm",
            f"ResNet-34-{variant}: L1-norm pruning of each block's first conv, stage ratios {stage_ratios}",
            L1_SOURCE, imagenet_resnet("basic", resnet34_blocks(stage_ratios)))
    for percent, widths in THINET_RESNET.items():
        blocks = [[{"mid": [w, w]} for _ in range(n)] for w, n in zip(widths, RESNET50_DEPTHS, strict=True)]
        add(f"thinet{percent}-resnet50-imagenet", "imagenet", "thinet",
            f"ResNet-50 ThiNet-{percent}: bottleneck inner widths {'/'.join(map(str, widths))} per stage",
            THINET_SOURCE, imagenet_resnet("bottleneck", blocks))
    add("vgg16-thinet-conv-imagenet", "imagenet", "thinet", "VGG-16 ThiNet-Conv: halved early convs, 4096-4096 head",
        THINET_SOURCE, imagenet_vgg(VGG_THINET_CONV, "fc4096"))
    add("vgg16-thinet-gap-imagenet", "imagenet", "thinet", "VGG-16 ThiNet-GAP: ThiNet-Conv's convs, no last pool, "
        "global average pool and Linear(512, 1000)", THINET_SOURCE, imagenet_vgg(VGG_THINET_CONV[:-1], "gap"))
    add("vgg16-thinet-tiny-imagenet", "imagenet", "thinet", "VGG-16 ThiNet-Tiny: global average pool and "
        "Linear(256, 1000)", THINET_SOURCE, imagenet_vgg(VGG_THINET_TINY, "gap"))
    add("vgg16-5x-imagenet", "imagenet", "regression", "VGG-16-5x: channel pruning (CP) to 5x fewer FLOPs",
        CP_SOURCE, imagenet_vgg(VGG_5X, "fc4096"))
    blocks_2x = [[{"in_select": k, "mid": [c1, c2]} for k, c1, c2 in stage] for stage in RESNET50_2X]
    add("resnet50-2x-imagenet", "imagenet", "regression", "ResNet-50-2x (CP): each bottleneck reads a subset of "
        "its inputs (the first ones here) and has narrower inner convs", CP_SOURCE,
        imagenet_resnet("bottleneck", blocks_2x))
    for depth, units in sorted(SSS.items()):
        add(f"sss-resnet{depth}-imagenet", "imagenet", "sss", f"SSS ResNet-{depth}: ResNet-50 with residual "
            f"branches removed, per stage (remaining, first kept) {units}", SSS_SOURCE,
            imagenet_resnet("bottleneck", sss_blocks(units)))
    return out


def main(root: str | None = None) -> None:
    for d in definitions():
        model = build_model(d["arch"])
        counts = count(model, d["arch"].input_size)
        old = entry_file(d["name"], root)
        kept = {k: v for k, v in read_json(old).items() if k in ("weights", "measured", "masked")} \
            if old.is_file() else {}
        entry = ZooEntry(**d, params=counts.params, flops=counts.flops, paper_accuracy=PAPER.get(d["name"]),
                         root=zoo_root(root), **kept)
        print(f"{write_entry(entry, root)}  params {counts.params:,}  FLOPs {counts.flops:,}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
