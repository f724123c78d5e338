"""CIFAR-10 in its "python version" on-disk format, read and written with numpy only,
and the contract every trainer shares: its command-line flags and its JSON-lines output.

Every trainer imports this module (it sits beside them) so that all frameworks read the
same bytes the same way and speak to the harness the same way.  The synthetic writer
produces the same files as the real distribution, so the real loader is exercised on
every run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

DIRNAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGES_PER_BATCH = 10_000
SYNTHETIC_MARKER = "SYNTHETIC"


@dataclass(frozen=True)
class Split:
    """Images as float32 NCHW in [0, 1] (pixels / 255, as the spec asks) and int64 labels."""

    images: np.ndarray
    labels: np.ndarray


def batches_dir(root: str) -> str:
    """Accept either the `cifar-10-batches-py` folder itself or its parent."""
    return root if os.path.basename(os.path.normpath(root)) == DIRNAME else os.path.join(root, DIRNAME)


def is_present(root: str) -> bool:
    d = batches_dir(root)
    return all(os.path.isfile(os.path.join(d, f)) for f in (*TRAIN_FILES, TEST_FILE))


def is_synthetic(root: str) -> bool:
    return os.path.isfile(os.path.join(batches_dir(root), SYNTHETIC_MARKER))


class _Unpickler(pickle.Unpickler):
    """Reads pickles written under numpy 2 (`numpy._core`) with numpy 1.x too (MXNet's interpreter)."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _Unpickler(f, encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected N x 3072 uint8 data and N labels, got {data.shape} and {len(labels)}")
    return data, labels


def _to_split(data: np.ndarray, labels: np.ndarray) -> Split:
    images = data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
    return Split(images=images, labels=labels)


def load(root: str, train_images: int | None = None, test_images: int | None = None) -> tuple[Split, Split]:
    """Load the training and test splits, optionally only their first N images."""
    d = batches_dir(root)
    if not is_present(root):
        raise FileNotFoundError(f"CIFAR-10 not found in {d}: expected {', '.join(TRAIN_FILES)} and {TEST_FILE}")
    parts, labels, have = [], [], 0
    for name in TRAIN_FILES:
        if train_images is not None and have >= train_images:
            break
        x, y = _read_batch(os.path.join(d, name))
        parts.append(x)
        labels.append(y)
        have += len(x)
    x, y = np.concatenate(parts), np.concatenate(labels)
    tx, ty = _read_batch(os.path.join(d, TEST_FILE))
    return _to_split(x[:train_images], y[:train_images]), _to_split(tx[:test_images], ty[:test_images])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of one epoch: the same permutation in every framework for a given seed."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def write_synthetic(root: str, seed: int = 0, train_images: int = 50_000, test_images: int = 10_000) -> str:
    """Write a deterministic, learnable stand-in for CIFAR-10 in the real format.

    Each class is a fixed random template plus per-image noise, so a network's loss falls
    as it would on real data while the compute per image is identical.  The files are
    written into a private folder that is renamed into place, so writers racing for the
    same data set (two hosts' tasks on one machine) never see each other's partial files.
    """
    final = batches_dir(root)
    os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
    d = tempfile.mkdtemp(prefix=".synthetic-", dir=os.path.dirname(final) or ".")
    rng = np.random.default_rng(seed)
    templates = rng.integers(96, 161, size=(10, 3072)).astype(np.int16)

    def make(n: int) -> dict:
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(-96, 97, size=(n, 3072), dtype=np.int16)
        data = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    per_file = -(-train_images // len(TRAIN_FILES))
    remaining = train_images
    for name in TRAIN_FILES:
        n = min(per_file, remaining)
        remaining -= n
        _dump(os.path.join(d, name), {**make(n), b"batch_label": f"synthetic {name}".encode()})
    _dump(os.path.join(d, TEST_FILE), {**make(test_images), b"batch_label": b"synthetic test"})
    _dump(
        os.path.join(d, META_FILE),
        {b"label_names": [n.encode() for n in LABEL_NAMES], b"num_cases_per_batch": IMAGES_PER_BATCH, b"num_vis": 3072},
    )
    with open(os.path.join(d, SYNTHETIC_MARKER), "w") as f:
        f.write(f"seed={seed} train={train_images} test={test_images}\n")
    try:
        os.rename(d, final)
    except OSError:  # another writer finished first: its files are the same bytes
        shutil.rmtree(d)
    return final


def _dump(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    os.replace(tmp, path)


def trainer_arguments(description: str) -> argparse.ArgumentParser:
    """The flags every trainer accepts; the harness passes the same ones to each framework."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return p


def emit(event: str, **fields) -> None:
    """One trainer event (`start`, `epoch`, `summary`) as one JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)
