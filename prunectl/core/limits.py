"""Size limits checked before anything is allocated: a few bytes of JSON never decide how much memory is used.

Every architecture (a pulled config.json, a run's arch.json, `--model-option`), every JSON file read from a run
or the Hub, every npz dataset (its declared size and labels) and every file downloaded from the Hub (its declared
size) is checked against these limits first, and refused with a one-line
error naming the limit and how to raise it. Raise a limit for one command with its environment variable, e.g.
``PRUNECTL_MAX_PARAMS=5e9 prunectl train ...``; the defaults sit well above every model of the paper
(VGG-16 on ImageNet: 138M parameters) and below what would exhaust a workstation. See docs/security.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from prunectl.errors import BadValueError


@dataclass(frozen=True)
class Limits:
    """The limits in force; `current()` reads the PRUNECTL_MAX_* overrides."""

    params: int = 1_000_000_000  # parameters + buffers of one model (4 GB as float32)
    activations: int = 1_000_000_000  # elements of all layer outputs for ONE example (4 GB as float32)
    classes: int = 1_000_000  # num_classes of an architecture and the largest label + 1 of an npz dataset
    input: int = 1 << 26  # elements of one input example (C * H * W), e.g. 3 x 4096 x 4096 is under it
    json_bytes: int = 64 << 20  # size of one JSON file read from a run directory or the Hub
    json_depth: int = 64  # nesting of arrays/objects in such a file
    data_bytes: int = 16 << 30  # decoded size of one npz dataset (a 1 KiB compressed file can declare 100 GB)
    download_bytes: int = 16 << 30  # one file downloaded from the Hub (as the server declares its size)


ENV = {f.name: f"PRUNECTL_MAX_{f.name.upper()}" for f in fields(Limits)}


def current() -> Limits:
    """The defaults, with any PRUNECTL_MAX_<NAME> environment variable applied (a number; 2e9 is accepted)."""
    values: dict[str, int] = {}
    for name, var in ENV.items():
        text = os.environ.get(var)
        if text is None or not text.strip():
            continue
        try:
            number = float(text)
            if not number >= 1 or number != number or number == float("inf"):
                raise ValueError
        except ValueError:
            raise BadValueError(f"{var}={text!r} is not a positive number") from None
        values[name] = int(number)
    return Limits(**values)


def exceeded(what: str, value: int, name: str, limit: int) -> BadValueError:
    return BadValueError(f"{what} is {value:,}, over the limit of {limit:,}; if that is intended, raise it with "
                         f"{ENV[name]}=N")


def check_arch_numbers(num_classes: Any, input_size: Any) -> None:
    """num_classes and input_size of an architecture, against the limits (before any layer is built)."""
    lim = current()
    if isinstance(num_classes, int) and num_classes > lim.classes:
        raise exceeded("num_classes", num_classes, "classes", lim.classes)
    elements = 1
    for v in input_size:
        if isinstance(v, int) and v > 0:
            elements *= v
    if elements > lim.input:
        raise exceeded(f"the input size {tuple(input_size)} (elements per example)", elements, "input", lim.input)


def check_json_depth(data: Any, source: str) -> None:
    """The nesting depth of parsed JSON (iteratively: a deep document cannot exhaust the stack here)."""
    limit = current().json_depth
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise exceeded(f"the JSON nesting depth of {source}", depth, "json_depth", limit)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def check_npz_size(path: Path) -> None:
    """The decoded size every array of an .npz declares in its header, summed, against `data_bytes` (read first)."""
    import zipfile

    import numpy as np

    limit, total = current().data_bytes, 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
                count = 1
                for n in shape:
                    count *= int(n)
                total += count * dtype.itemsize
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return  # not a readable archive: the reader reports it
    if total > limit:
        raise exceeded(f"the decoded size of {path} (bytes)", total, "data_bytes", limit)


__all__ = ["ENV", "Limits", "check_arch_numbers", "check_json_depth", "check_npz_size", "current", "exceeded"]
