"""neon's data folder (`-w`): made for the exact bytes of the data set and the images asked for, so the ZCA
whitening neon caches there, and never invalidates, belongs to that data alone; the cache itself computed once by
the example (`-e 0`) before anything is measured. Apart from `neon` because it reads the data set (numpy)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from trainbench.measure import environ
from trainbench.planning import TrainingJob
from trainbench.trainers import cifar10

ZCA_CACHE = "cifar-10-zca-cache.pkl"
TRAIN_BATCHES = len(cifar10.TRAIN_FILES)  # neon's loader stacks their label lists: they must be equally long


def workdir(job: TrainingJob) -> Path:
    """neon's `-w` folder for exactly this data: its name hashes the batch files' bytes and the images asked for,
    so the ZCA cache neon keeps there belongs to that data alone. Beside the data set (`.decoded/neon/`), or in
    the temporary folder when the data set is read-only."""
    source = cifar10.batches_dir(job.data_dir)
    digests = [cifar10.digest(os.path.join(source, f)) for f in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE)]
    key = hashlib.sha256(json.dumps([digests, job.train_images, job.test_images]).encode()).hexdigest()[:16]
    parent = Path(source) / cifar10.CACHE_DIRNAME / "neon"
    if not os.access(source, os.W_OK):
        parent = Path(tempfile.gettempdir()) / f"trainbench-neon-{os.getuid()}"
    return parent / key


def prepare(python: str, script: str, folder: Path, job: TrainingJob, log: Callable[[str], None]) -> None:
    """Make `folder` once (atomically: a private folder renamed into place), then have the example compute its
    ZCA cache there (`-e 0`): every measured run then does the same work, as a neon user's second run does. An
    example that cannot even do that fails the same way measured, where its row says why."""
    if not (folder / cifar10.DIRNAME / cifar10.TEST_FILE).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            _write_data(cifar10.batches_dir(job.data_dir), staging / cifar10.DIRNAME, job)
            staging.rename(folder)
        except OSError:
            if not (folder / cifar10.DIRNAME / cifar10.TEST_FILE).is_file():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if (folder / ZCA_CACHE).is_file():
        return
    log(f"neon: computing the ZCA whitening of this data once, before anything is measured ({folder})")
    argv = [python, script, "-b", "cpu", "-e", "0", "-z", str(job.batch_size), "-w", str(folder)]
    out = subprocess.run(argv, capture_output=True, text=True, env=environ.trainer_environ({}), timeout=job_limit(job))
    if out.returncode != 0 or not (folder / ZCA_CACHE).is_file():  # the measured run meets the same trouble: its row
        log(
            f"neon: the ZCA preparation failed (exit status {out.returncode}), the run computes it: {out.stderr[-600:]}"
        )


def job_limit(job: TrainingJob) -> float:
    """ZCA on 50,000 images takes minutes on a small host; a run of fewer images, seconds."""
    return 3600.0 if not job.train_images else 600.0


def _write_data(source: str, dest: Path, job: TrainingJob) -> None:
    dest.mkdir()
    if not job.train_images:
        for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE, cifar10.META_FILE):
            if os.path.isfile(os.path.join(source, name)):
                os.symlink(os.path.realpath(os.path.join(source, name)), dest / name)
        return
    train, test = cifar10.load(source, job.train_images, job.test_images)
    per = job.train_images // TRAIN_BATCHES
    images = train.images.reshape(len(train.labels), -1)
    for i, name in enumerate(cifar10.TRAIN_FILES):
        part = slice(i * per, (i + 1) * per)
        batch = f"training batch {i + 1} of 5 (the first {job.train_images} images)"
        cifar10.dump_batch(str(dest / name), _batch(batch, images[part], train.labels[part], i * per))
    test_images = test.images.reshape(len(test.labels), -1)
    cifar10.dump_batch(str(dest / cifar10.TEST_FILE), _batch("testing batch 1 of 1", test_images, test.labels, 0))


def _batch(label: str, data, labels, first: int) -> dict:
    names = [f"image_{first + i:06d}.png" for i in range(len(labels))]
    return {"batch_label": label, "labels": [int(v) for v in labels], "data": data, "filenames": names}
