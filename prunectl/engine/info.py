"""Engine stage `info`: parameters, FLOPs and a per-layer table for a model name, architecture file or run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.core.flops import FLOPS_LABEL, count
from prunectl.core.latency import LatencySettings, measure
from prunectl.data import DATASETS, dataset_shape, imagefolder, list_datasets, npzfile
from prunectl.data.base import SMALL_IMAGE_MAX
from prunectl.engine import zoo
from prunectl.engine.protocols import choose_protocol, protocol_of
from prunectl.errors import ArtifactError, BadValueError
from prunectl.methods.sss import layout_notation, stage_layout
from prunectl.models import MODELS, Arch, ArchModel, build_model, default_arch
from prunectl.models.external import PREFIXES, is_external
from prunectl.runs.store import Run, open_run
from prunectl.structure import channel_groups
from prunectl.training.trainer import resolve_device


def resolve_arch(target: str, dataset: str | None = None) -> tuple[Arch, Path | None]:
    """An architecture from a registered model name, an arch JSON file, or a run directory.

    Returns the arch and, for a run directory, its path (so callers can find the mask). `zoo:NAME` is a zoo entry.
    """
    if zoo.is_zoo_ref(target):
        return zoo.zoo_arch(target, dataset)
    path = Path(target).expanduser()
    if path.is_dir():
        run = open_run(path)
        return run.arch(), run.path
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ArtifactError(f"no architecture file at {path}")
        return Arch.load(path), None
    if not is_external(target):
        MODELS.get(target)  # unknown name → did-you-mean error
    if dataset is None:
        return default_arch(target), None
    num_classes, input_size = dataset_shape(dataset)
    return default_arch(target, num_classes=num_classes, input_size=input_size), None


def resolve_source(target: str) -> tuple[Arch, Run | None]:
    """A pruned architecture to train: a run directory (with its mask, if any), an architecture JSON file, or
    `zoo:NAME` (its pulled run when the entry has weights, else its architecture)."""
    if zoo.is_zoo_ref(target):
        return zoo.zoo_source(target)
    path = Path(target).expanduser()
    if path.is_dir():
        run = open_run(path)
        return run.arch(), run
    if not path.is_file():
        raise ArtifactError(f"no run directory or architecture file at {path}")
    arch = Arch.load(path)
    if "mask_file" in arch.notes:
        raise BadValueError(f"{path} comes with a weight mask; pass the pruned run directory "
                            f"({arch.notes.get('source_run', 'its run')}) so the mask is kept")
    return arch, None


def source_method(target: str) -> str | None:
    """The pruning method a `zoo:NAME` architecture came from (its entry's `method`), so scratch-B can follow that
    method's facts; None for anything else (a run's lineage names its own method)."""
    return zoo.get_entry(zoo.entry_name(target)).method if zoo.is_zoo_ref(target) else None


def resolve_run(target: str | Path) -> Run:
    """A run directory, or `zoo:NAME` for a zoo entry with weights (pulled into the run store, offline for
    packaged weights) — what every command that takes a run accepts."""
    if isinstance(target, str) and zoo.is_zoo_ref(target):
        return zoo.pull_entry(zoo.entry_name(target))
    return open_run(target)


def protocol_info(target: str, dataset: str | None, run_path: Path | None) -> dict[str, str] | None:
    """The training protocol that goes with `info`'s target, and why: the dataset's when one is given; a run's
    recorded one (its own record or its lineage's), else its dataset's rule; a zoo entry's dataset's; else None."""
    if dataset is not None:
        return choose_protocol(dataset).to_dict()
    if run_path is not None:
        run = open_run(run_path)
        for record in (run.record, *run.lineage()):
            if isinstance(record.get("protocol"), dict):
                return dict(record["protocol"])
        data = run.record.get("spec", {}).get("dataset")
        if data is None:
            return None
        return {"name": protocol_of(run.record).name,
                "why": f"no protocol recorded; the rule for {data} when this run was made"}
    if zoo.is_zoo_ref(target):
        entry = zoo.get_entry(zoo.entry_name(target))
        return choose_protocol(entry.dataset).to_dict()
    return None


def datasets_report() -> dict[str, Any]:
    """The registered datasets with the protocol each follows, and the user-data forms with their options."""
    rows = [{"name": n, "num_classes": DATASETS.get(n).num_classes, "input_size": list(DATASETS.get(n).input_size),
             "protocol": DATASETS.get(n).protocol} for n in list_datasets()]
    user = [{"name": "npz:PATH", "holds": npzfile.HOLDS, "options": dict(npzfile.OPTIONS)},
            {"name": "imagefolder:PATH", "holds": imagefolder.HOLDS, "options": dict(imagefolder.OPTIONS)}]
    rule = (f"your own data states a default: images of at most {SMALL_IMAGE_MAX} px a side follow the CIFAR-style "
            "protocol, larger ones the ImageNet protocol; image size and channels are read from the data")
    return {"datasets": rows, "user_data": user, "protocol_rule": rule}


def info(target: str, dataset: str | None = None, *, latency: LatencySettings | None = None,
         device: str | None = "cpu") -> dict[str, Any]:
    """Params, FLOPs (multiply-adds, conv + linear) and per-layer rows; sparse-aware for masked runs; the
    training protocol where a dataset is known (`protocol_info`); with `latency`, the measured forward time on
    `device` (`prunectl.core.latency.measure`: a mask does not make a dense forward faster, so it is timed dense)."""
    arch, run_path = resolve_arch(target, dataset)
    model = build_model(arch)
    masks = None
    if run_path is not None and (run_path / paths.MASK).is_file():
        masks = open_run(run_path).mask()
    counts = count(model, arch.input_size, masks)
    measured = {"latency": measure(model, arch.input_size, latency, resolve_device(device))} if latency else {}
    return {
        **measured,
        "target": target,
        "name": arch.name,
        "family": arch.family,
        "num_classes": arch.num_classes,
        "input_size": list(arch.input_size),
        "params": counts.params,
        "flops": counts.flops,
        "dense_params": counts.dense_params,
        "dense_flops": counts.dense_flops,
        "flops_unit": FLOPS_LABEL,
        "protocol": protocol_info(target, dataset, run_path),
        "blocks": residual_blocks(model),
        "layers": [
            {"name": r.name, "type": r.kind, "shape": r.shape, "params": r.params, "flops": r.flops,
             "density": r.density}
            for r in counts.layers
        ],
        **({"groups": group_rows(model)} if arch.family in PREFIXES else {}),
    }


def group_rows(model: ArchModel) -> list[dict[str, Any]]:
    """The channel groups of a traced library model: what each couples (producers, norms, consumers)."""
    return [{"name": g.name, "channels": g.channels, "tie": g.tie or "", "producers": list(g.producers),
             "norms": len(g.norms), "consumers": len(g.consumers), "prunable": g.prunable}
            for g in channel_groups(model)]


def library_models(pattern: str = "*") -> list[str]:
    """`torchvision:NAME` and (with timm installed) `timm:NAME` names matching a glob on the full name."""
    import fnmatch
    import importlib.util

    from prunectl.models.external import registry_names

    libraries = ["torchvision"] + (["timm"] if importlib.util.find_spec("timm") else [])
    return [f"{lib}:{n}" for lib in libraries for n in registry_names(lib)
            if fnmatch.fnmatch(f"{lib}:{n}", pattern) or fnmatch.fnmatch(n, pattern)]


def residual_blocks(model: ArchModel) -> dict[str, Any] | None:
    """Residual branches per stage, in the notation of the SSS models (docs/architectures.md): per stage (blocks
    whose branch remains, whether the first block keeps its branch), from the structure layer's block groups;
    None for a family without removable blocks."""
    layout = stage_layout(model)
    if layout is None:
        return None
    return {"stages": [s.to_dict() for s in layout], "notation": layout_notation(layout)}
