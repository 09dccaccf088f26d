"""CIFAR's pickled batch files, read with an unpickler that can build only what a batch contains.

A CIFAR batch is a pickled dict of str/bytes keys, a uint8 numpy array, lists of ints and strings. A data
directory is not trusted (docs/security.md): a planted ``data_batch_1`` must not run code, so instead of
``pickle.load`` (torchvision's reader) we use `RestrictedUnpickler`, which resolves only the numpy globals an
array needs and refuses every other global (``os.system``, ``builtins.eval``, ...). Checking the published md5s
instead would refuse any re-pickled copy (and our test fixtures); the restricted unpickler is safe for both.
"""

from __future__ import annotations

import io
import pickle  # only through RestrictedUnpickler below, which resolves no global outside _ALLOWED
from pathlib import Path
from typing import Any

import numpy as np


class NotACifarBatch(ValueError):
    """A batch file that is hostile or damaged; the dataset reader turns it into its one-line error."""

# (module, name) pairs a pickled numpy array refers to, across numpy 1.x/2.x and pickle protocols 2-5;
# _codecs.encode is how protocol 2 stores bytes written by Python 3 (it only encodes a string).
_ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for plain data and numpy arrays; any other global is an UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR batch never contains")


def load_batch(path: Path) -> dict[str, Any]:
    """One batch file as a dict with str keys; a hostile or damaged file is a NotACifarBatch naming it."""
    try:
        data = path.read_bytes()
        batch = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OSError) as err:
        raise NotACifarBatch(f"refusing {path}: not a CIFAR batch ({err}); replace it with the published "
                             "file or delete it and pass --download") from None
    if not isinstance(batch, dict):
        raise NotACifarBatch(f"refusing to read {path}: it is not a CIFAR batch (a {type(batch).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in batch.items()}


def read_batches(folder: Path, names: list[str], label_key: str) -> tuple[np.ndarray, list[int]]:
    """Images (N, 3, 32, 32 uint8) and labels of the named batches in `folder`."""
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = load_batch(path)
        try:
            x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = [int(v) for v in batch.get(label_key, batch.get("labels", []))]
        except (KeyError, ValueError, TypeError) as err:
            raise NotACifarBatch(f"{path} is not a CIFAR batch (bad 'data' or labels: {err}); replace it with "
                                       "the published file") from None
        if len(y) != len(x):
            raise NotACifarBatch(f"{path} is not a CIFAR batch ({len(x)} images but {len(y)} labels)")
        images.append(x)
        labels.extend(y)
    return np.concatenate(images), labels


__all__ = ["NotACifarBatch", "RestrictedUnpickler", "load_batch", "read_batches"]
