"""CIFAR-10 in its "python version" on-disk format, read and written with numpy only,
and the contract every trainer shares: its command-line flags and its JSON-lines output.

Every trainer imports this module (it sits beside them) so that all frameworks read the
same bytes the same way and speak to the harness the same way.  The synthetic writer
produces the same files as the real distribution, so the real loader is exercised on
every run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import shutil
import stat
import tempfile
import time
import zlib
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
    """Images as uint8 NCHW, as stored (often read-only, memory-mapped from the cache), and int64 labels.

    Each trainer moves the bytes to its device and scales them there (float32 pixels / 255, as the spec
    asks): a quarter of the bytes to transfer, and no float copy of the whole set on the host.
    """

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


class DataError(ValueError):
    """A data file is not CIFAR-10's python format; the message is one line that starts with the file's path."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch needs: what pickle rebuilds numpy arrays and bytes with (numpy 1.x and 2)."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    found: dict[tuple[str, str], object] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "_reconstruct")] = reconstruct
    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "ndarray")] = np.ndarray
        found[(module, "dtype")] = np.dtype
    found[("_codecs", "encode")] = _latin1  # how protocol 2 spells bytes when Python 3 writes it
    return found


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode(..., {encoding!r}): only latin1 text becomes bytes")
    return text.encode("latin1")


class _Unpickler(pickle.Unpickler):
    """Data only: numpy's array reconstruction, nothing else (a pickle naming os.system or eval is refused).

    Reads pickles written under numpy 2 (`numpy._core`) with numpy 1.x too (MXNet's interpreter) and back.
    """

    ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused {module}.{name}: a CIFAR-10 batch holds only dicts, lists, bytes, str, ints "
                "and uint8/int numpy arrays"
            ) from None


def _check_values(obj, depth: int = 0) -> None:
    """What CIFAR-10's python format holds: dicts, lists, bytes, str, numbers, numeric numpy arrays."""
    if depth > 4:
        raise pickle.UnpicklingError("nested deeper than a CIFAR-10 batch")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (bytes, str)):
                raise pickle.UnpicklingError(f"a key of type {type(k).__name__}")
            _check_values(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_values(v, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "uif":
            raise pickle.UnpicklingError(f"a numpy array of dtype {obj.dtype}")
    elif not isinstance(obj, (bytes, str, int, float, type(None))):
        raise pickle.UnpicklingError(f"a value of type {type(obj).__name__}")


def _unpickle(path: str):
    try:
        with open(path, "rb") as f:
            batch = _Unpickler(f, encoding="bytes").load()
        _check_values(batch)
    except OSError:
        raise
    except Exception as exc:  # truncated, empty, or not data: one line naming the file
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {detail})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    return {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise DataError(f"{path}: not a CIFAR-10 batch (no {' or '.join(map(repr, missing))} entry)")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected N x 3072 uint8 data, got {got}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels) and not (
        isinstance(labels, np.ndarray) and labels.dtype.kind in "iu"
    ):
        raise DataError(f"{path}: labels must be integers 0..9")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)]
        raise DataError(f"{path}: labels must lie in 0..9 (the 10 classes), found {int(bad[0])}")
    return data, labels


def _to_split(data: np.ndarray, labels: np.ndarray) -> Split:
    return Split(images=data.reshape(-1, 3, 32, 32), labels=labels)


# The decoded cache: each batch file's checked arrays as plain .npy files in `.decoded/` inside the data
# set's folder, named by the source file's name and a SHA-256 of its bytes (a changed file, even with the
# same size and mtime, is decoded afresh).  The digest is remembered in `<batch>.key` beside the file's
# identity (device, inode, size, mtime and ctime: no rewrite or replacement keeps them all, since ctime
# cannot be set back), so a warm start hashes nothing.  They are written only from data that passed every check above,
# atomically (a private temporary file renamed into place: concurrent writers write the same bytes, readers
# never see a partial file), with a CRC-32 of each array in a `.sum` file written last, and read back
# memory-mapped without pickle.  Nothing read is trusted: only regular files (no symlink, no FIFO) in a real
# `.decoded` folder are opened, and their shapes, label range and checksums must match, else the batch is
# decoded again.
CACHE_DIRNAME = ".decoded"
CHUNK = 4 << 20


def _cache_dir(path: str) -> str | None:
    """`.decoded/` beside the batch, unless something other than a real folder sits there (a symlink would
    lead the cleanup into another folder): then no cache at all."""
    folder = os.path.join(os.path.dirname(path), CACHE_DIRNAME)
    try:
        return folder if stat.S_ISDIR(os.lstat(folder).st_mode) else None
    except FileNotFoundError:
        return folder
    except OSError:
        return None


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def _cache_key(folder: str, path: str) -> str | None:
    """`<batch>-<SHA-256 of its bytes>`, the digest taken from `<batch>.key` while the file's identity holds."""
    memo = os.path.join(folder, os.path.basename(path) + ".key")
    try:
        st = os.stat(path)
        identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        known = None
        if _regular(memo):
            with open(memo) as f:
                known = f.read(200).split()
        if known and len(known) == 2 and known[0] == identity:
            digest = known[1]
        else:
            digest = _digest(path)
            with contextlib.suppress(OSError):
                os.makedirs(folder, exist_ok=True)
                _save_atomically(memo, f"{identity} {digest}".encode())
    except OSError:
        return None
    return f"{os.path.basename(path)}-{digest}"


def digest(path: str) -> str:
    """A SHA-256 of a batch file's bytes (its first 32 hex digits), remembered in the cache while the file's
    identity holds: a key for what was derived from exactly these bytes."""
    folder = _cache_dir(path)
    key = _cache_key(folder, path) if folder else None
    return key.rsplit("-", 1)[1] if key else _digest(path)


def _cache_paths(folder: str, key: str) -> tuple[str, str, str]:
    base = os.path.join(folder, key)
    return base + ".x.npy", base + ".y.npy", base + ".sum"


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _checksums(x: np.ndarray, y: np.ndarray) -> str:
    return f"{zlib.crc32(x):08x} {zlib.crc32(y):08x}"


def _read_cached(folder: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if present, regular files, well-formed and matching their checksums (else None)."""
    xp, yp, sp = _cache_paths(folder, key)
    if not all(map(_regular, (xp, yp, sp))):
        return None
    try:
        x = np.load(xp, mmap_mode="r", allow_pickle=False)
        y = np.load(yp, mmap_mode="r", allow_pickle=False)
        with open(sp) as f:
            recorded = f.read(64).strip()
    except (OSError, ValueError):
        return None
    ok = x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072 and y.dtype == np.int64 and y.shape == (len(x),)
    if not ok or (len(y) and (y.min() < 0 or y.max() > 9)) or recorded != _checksums(x, y):
        return None
    return x, y


def _save_atomically(target: str, data: bytes | np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, np.ndarray):
                np.save(f, data, allow_pickle=False)
            else:
                f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the other users of a shared data set
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_cache(folder: str, path: str, key: str, data: np.ndarray, labels: np.ndarray) -> None:
    """Best effort: a read-only data set, a full disk or a lost race only means no cache."""
    xp, yp, sp = _cache_paths(folder, key)
    try:
        os.makedirs(folder, exist_ok=True)
        _save_atomically(yp, labels)
        _save_atomically(xp, data)
        _save_atomically(sp, _checksums(data, labels).encode())  # last: a reader needs all three
        stale = f"{os.path.basename(path)}-"
        for name in os.listdir(folder):  # earlier versions of the same file
            if name.startswith(stale) and not name.startswith(key + "."):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
    except OSError:
        pass


def _load_batch(path: str, cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's checked arrays: from the cache when it matches the file's bytes, else decoded (and cached)."""
    folder = _cache_dir(path) if cache else None
    key = _cache_key(folder, path) if folder else None
    if folder and key and (found := _read_cached(folder, key)) is not None:
        return found
    data, labels = _read_batch(path)
    if folder and key and _cache_key(folder, path) == key:  # unchanged while it was read: cache what was checked
        _write_cache(folder, path, key, np.ascontiguousarray(data), labels)
    return data, labels


def load(
    root: str, train_images: int | None = None, test_images: int | None = None, cache: bool = True
) -> tuple[Split, Split]:
    """Load the training and test splits, optionally only their first N images (`cache`: see `_load_batch`)."""
    d = batches_dir(root)
    if not is_present(root):
        raise FileNotFoundError(f"CIFAR-10 not found in {d}: expected {', '.join(TRAIN_FILES)} and {TEST_FILE}")
    parts, labels, have = [], [], 0
    for name in TRAIN_FILES:
        if train_images is not None and have >= train_images:
            break
        x, y = _load_batch(os.path.join(d, name), cache)
        parts.append(x)
        labels.append(y)
        have += len(x)
    if train_images is not None and have < train_images:
        raise DataError(f"{d}: asked for {train_images} training images; data_batch_1..5 hold {have}")
    x, y = (parts[0], labels[0]) if len(parts) == 1 else (np.concatenate(parts), np.concatenate(labels))
    tx, ty = _load_batch(os.path.join(d, TEST_FILE), cache)
    return _to_split(x[:train_images], y[:train_images]), _to_split(tx[:test_images], ty[:test_images])


def load_or_exit(root: str, train_images: int | None = None, test_images: int | None = None) -> tuple[Split, Split]:
    """`load` for a trainer: bad or missing data ends the process with one line naming the file (exit status 1)."""
    try:
        return load(root, train_images, test_images)
    except (DataError, OSError) as exc:
        raise SystemExit(str(exc)) from None


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of one epoch: the same permutation in every framework for a given seed."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def synthetic_name(seed: int) -> str:
    """The folder of the synthetic set of `seed`; "v2" since it is written in the real files' Python 2 layout (the
    first sets had bytes keys and numpy 2 pickles, which neon's loader and numpy 1.x cannot read)."""
    return f"synthetic-v2-seed{seed}"


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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(d, 0o777 & ~umask)  # mkdtemp's 0700 would lock other users out of a shared data set
    rng = np.random.default_rng(seed)
    templates = rng.integers(96, 161, size=(10, 3072)).astype(np.int16)

    def make(n: int, label: str) -> dict:
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(-96, 97, size=(n, 3072), dtype=np.int16)
        data = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        names = [f"{LABEL_NAMES[c]}_s_{i:06d}.png" for i, c in enumerate(labels)]
        return {"batch_label": label, "labels": labels.tolist(), "data": data, "filenames": names}

    per_file = -(-train_images // len(TRAIN_FILES))
    remaining = train_images
    try:
        for i, name in enumerate(TRAIN_FILES, 1):
            n = min(per_file, remaining)
            remaining -= n
            dump_batch(os.path.join(d, name), make(n, f"synthetic training batch {i} of 5"))
        dump_batch(os.path.join(d, TEST_FILE), make(test_images, "synthetic testing batch 1 of 1"))
        dump_batch(
            os.path.join(d, META_FILE),
            {"num_cases_per_batch": IMAGES_PER_BATCH, "label_names": list(LABEL_NAMES), "num_vis": 3072},
        )
        with open(os.path.join(d, SYNTHETIC_MARKER), "w") as f:
            f.write(f"seed={seed} train={train_images} test={test_images}\n")
    except OSError as exc:  # a full disk: the partial folder would keep it full for the next attempt
        shutil.rmtree(d, ignore_errors=True)
        raise OSError(exc.errno, f"{exc.strerror} (writing the synthetic data set for {final})") from exc
    try:
        os.rename(d, final)
    except OSError:  # another writer finished first: its files are the same bytes
        shutil.rmtree(d)
    return final


class _NumpyGlobal:
    """A name the unpickler imports, spelled as numpy 1.x spelled it (numpy 2 says `numpy._core`, which 1.x lacks)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError("a name to pickle, not to call")


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]  # the pure-Python pickler takes a dispatch table
    """Protocol 2 as Python 2 with numpy 1.x wrote CIFAR-10: str and bytes as Python 2 strings (`encoding="latin1"`
    reads str keys, `encoding="bytes"` bytes keys), arrays rebuilt by `numpy.core.multiarray._reconstruct`."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _python2_string(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        size = len(raw)
        head = pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + size.to_bytes(4, "little")
        self.write(head + raw)

    def _numpy_global(self, obj: _NumpyGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def _array(self, obj: np.ndarray) -> None:
        reconstruct = _NumpyGlobal("numpy.core.multiarray", "_reconstruct")
        state = np.ascontiguousarray(np.asarray(obj)).__reduce__()[2]
        self.save_reduce(reconstruct, (np.ndarray, (0,), b"b"), state, obj=obj)

    dispatch[str] = dispatch[bytes] = _python2_string
    dispatch[_NumpyGlobal] = _numpy_global
    dispatch[np.ndarray] = dispatch[np.memmap] = _array  # the decoded cache's arrays are memory-mapped


def dump_batch(path: str, batch: dict) -> None:
    """Write one batch file as the real distribution's are (see `_Python2Pickler`), atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(batch)
    os.replace(tmp, path)


def trainer_arguments(description: str, variants: tuple[str, ...] = ("eager",)) -> argparse.ArgumentParser:
    """The flags every trainer accepts; the harness passes the same ones to each framework.

    `--variant` names how the framework executes the same network (the first of `variants` is the
    default; a registry variant entry such as "pytorch-graph" launches the trainer with `--variant graph`).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--variant", choices=variants, default=variants[0], help="how the framework runs the network")
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
    """One trainer event (`start`, `mark`, `epoch`, `summary`) as one JSON line on stdout, stamped with the wall
    clock (`t`) so the harness can cut the run into phases."""
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def mark(name: str) -> None:
    """A phase boundary: "ready" once the framework is imported and its devices initialised, "data" once the
    training data is on the device."""
    emit("mark", name=name)
