import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cifar10
from conftest import TRAINERS


def test_synthetic_files_have_the_real_on_disk_format(synthetic_data):
    assert sorted(n for n in os.listdir(synthetic_data) if n != cifar10.CACHE_DIRNAME) == sorted(
        [*cifar10.TRAIN_FILES, cifar10.TEST_FILE, cifar10.META_FILE, cifar10.SYNTHETIC_MARKER]
    )
    with open(os.path.join(synthetic_data, "data_batch_1"), "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert isinstance(batch[b"labels"], list) and set(batch[b"labels"]) <= set(range(10))


def test_loader_reads_the_synthetic_set_back(synthetic_data):
    train, test = cifar10.load(synthetic_data)
    assert train.images.shape == (2048, 3, 32, 32) and test.images.shape == (512, 3, 32, 32)
    assert train.images.dtype == np.uint8  # scaled to [0, 1] on the device, by each trainer
    with open(os.path.join(synthetic_data, "data_batch_1"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = raw[b"data"][0]
    # channel-major rows: 1024 R, then G, then B
    assert np.array_equal(train.images[0, 1, 0, :], first[1024:1056])
    assert train.labels[0] == raw[b"labels"][0]
    assert cifar10.is_synthetic(synthetic_data) and cifar10.is_present(os.path.dirname(synthetic_data))


def test_subsets_and_determinism(synthetic_data, tmp_path):
    train, test = cifar10.load(synthetic_data, train_images=500, test_images=100)
    assert len(train.labels) == 500 and len(test.labels) == 100
    again = cifar10.write_synthetic(str(tmp_path), seed=0, train_images=2048, test_images=512)
    assert np.array_equal(cifar10.load(again)[0].images, cifar10.load(synthetic_data)[0].images)
    other = cifar10.write_synthetic(str(tmp_path / "s1"), seed=1, train_images=2048, test_images=512)
    assert not np.array_equal(cifar10.load(other)[0].labels, cifar10.load(synthetic_data)[0].labels)


def test_epoch_order_is_a_seeded_permutation():
    a, b = cifar10.epoch_order(1000, 0, 1), cifar10.epoch_order(1000, 0, 2)
    assert sorted(a) == list(range(1000)) and not np.array_equal(a, b)
    assert np.array_equal(a, cifar10.epoch_order(1000, 0, 1))


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        cifar10.load(str(tmp_path))


# The decoded cache: hit, invalidation, concurrent writers, never trusted blindly


def cache_files(d) -> list[str]:
    folder = os.path.join(d, cifar10.CACHE_DIRNAME)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture
def data_copy(synthetic_data, tmp_path):
    d = tmp_path / cifar10.DIRNAME
    shutil.copytree(synthetic_data, d, ignore=shutil.ignore_patterns(cifar10.CACHE_DIRNAME))
    return str(d)


def test_a_warm_cache_is_read_memory_mapped_without_decoding(data_copy, monkeypatch):
    cold_train, cold_test = cifar10.load(data_copy, cache=False)
    assert cache_files(data_copy) == []
    first = cifar10.load(data_copy)
    names = cache_files(data_copy)
    assert len(names) == 4 * (len(cifar10.TRAIN_FILES) + 1) and all(n.endswith((".npy", ".sum", ".key")) for n in names)

    def no_decoding(path):
        raise AssertionError(f"decoded or hashed {path} although its cache is warm")

    monkeypatch.setattr(cifar10, "_read_batch", no_decoding)
    monkeypatch.setattr(cifar10, "_digest", no_decoding)  # the file's identity is unchanged: its digest is known
    train, test = cifar10.load(data_copy)
    for split, cold, warm in ((train, cold_train, first[0]), (test, cold_test, first[1])):
        assert np.array_equal(split.images, cold.images) and np.array_equal(split.labels, cold.labels)
        assert np.array_equal(warm.images, cold.images) and split.labels.dtype == np.int64
    one, _ = cifar10.load(data_copy, train_images=100)  # one file: a view of the memory map, not a copy
    assert isinstance(one.images.base, np.memmap) or isinstance(one.images, np.memmap)
    assert not one.images.flags.writeable


def test_a_changed_file_is_decoded_again_and_its_old_cache_dropped(data_copy, tmp_path):
    cifar10.load(data_copy)
    before = cache_files(data_copy)
    other = cifar10.write_synthetic(str(tmp_path / "other"), seed=1, train_images=2048, test_images=512)
    shutil.copyfile(os.path.join(other, "data_batch_1"), os.path.join(data_copy, "data_batch_1"))
    train, _ = cifar10.load(data_copy)
    expected, _ = cifar10.load(other, cache=False)
    assert np.array_equal(train.images[: len(expected.images) // 5], expected.images[: len(expected.images) // 5])
    after = cache_files(data_copy)
    changed = sorted(set(before) ^ set(after))
    assert len(changed) == 6 and all(n.startswith("data_batch_1-") for n in changed)  # 3 old gone, 3 new


def test_a_damaged_or_pickled_cache_file_is_never_trusted(data_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected, _ = cifar10.load(data_copy, cache=False)
    cifar10.load(data_copy)
    folder = os.path.join(data_copy, cifar10.CACHE_DIRNAME)
    _, x, y = sorted(n for n in os.listdir(folder) if n.startswith("data_batch_1-"))
    with open(os.path.join(folder, x), "r+b") as f:  # truncated
        f.truncate(1000)
    np.save(os.path.join(folder, y), np.array([object()] * 3, dtype=object), allow_pickle=True)  # needs pickle
    train, _ = cifar10.load(data_copy)
    assert np.array_equal(train.images, expected.images) and np.array_equal(train.labels, expected.labels)
    cached_x = np.load(os.path.join(folder, x), mmap_mode="r", allow_pickle=False)  # both rewritten whole
    cached_y = np.load(os.path.join(folder, y), mmap_mode="r", allow_pickle=False)
    assert cached_x.dtype == np.uint8 and cached_x.shape[1] == 3072 and cached_y.dtype == np.int64
    assert len(cached_x) == len(cached_y) > 0


def cached(d, batch: str) -> dict[str, str]:
    """The cache files of one batch by kind: x (images), y (labels), sum (their checksums)."""
    folder = os.path.join(d, cifar10.CACHE_DIRNAME)
    return {
        n.split(".")[-2] if n.endswith(".npy") else "sum": os.path.join(folder, n)
        for n in cache_files(d)
        if n.startswith(batch + "-")
    }


def decoded_again(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = cifar10._read_batch
    monkeypatch.setattr(cifar10, "_read_batch", lambda path: calls.append(os.path.basename(path)) or real(path))
    return calls


def test_cached_labels_out_of_range_are_never_used(data_copy, monkeypatch):
    cifar10.load(data_copy, train_images=100)
    y = cached(data_copy, "data_batch_1")["y"]
    np.save(y, np.full(len(np.load(y)), 77, dtype=np.int64))
    calls = decoded_again(monkeypatch)
    train, _ = cifar10.load(data_copy, train_images=100)
    assert calls == ["data_batch_1"] and train.labels.max() <= 9


def test_a_batch_replaced_with_the_same_size_and_mtime_is_decoded_afresh(data_copy, tmp_path):
    cifar10.load(data_copy, train_images=100)
    path = os.path.join(data_copy, "data_batch_1")
    st = os.stat(path)
    batch = cifar10._unpickle(path)
    batch[b"data"], batch[b"labels"] = batch[b"data"][::-1].copy(), batch[b"labels"][::-1]  # same bytes, reordered
    cifar10.dump_batch(path, batch)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    train, _ = cifar10.load(data_copy, train_images=100)
    assert np.array_equal(train.images.reshape(100, -1), batch[b"data"][:100])


def test_cache_files_rewritten_as_zeros_or_linked_elsewhere_are_never_used(data_copy, tmp_path, monkeypatch):
    expected, _ = cifar10.load(data_copy, train_images=100, cache=False)
    cifar10.load(data_copy, train_images=100)
    files = cached(data_copy, "data_batch_1")
    x = np.load(files["x"])
    np.save(files["x"], np.zeros_like(x))
    calls = decoded_again(monkeypatch)
    train, _ = cifar10.load(data_copy, train_images=100)
    assert calls == ["data_batch_1"] and np.array_equal(train.images, expected.images)
    elsewhere = tmp_path / "elsewhere.npy"
    np.save(elsewhere, np.zeros_like(x))
    os.unlink(files["x"])
    os.symlink(elsewhere, files["x"])
    calls.clear()
    train, _ = cifar10.load(data_copy, train_images=100)
    assert calls == ["data_batch_1"] and np.array_equal(train.images, expected.images)


def test_a_fifo_at_a_cache_path_never_hangs_the_loader(data_copy):
    cifar10.load(data_copy, train_images=100)
    x = cached(data_copy, "data_batch_1")["x"]
    os.unlink(x)
    os.mkfifo(x)
    code = f"import sys; sys.path.insert(0, {str(TRAINERS)!r}); import cifar10; cifar10.load({data_copy!r}, 100)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_decoded_folder_that_is_a_symlink_is_neither_used_nor_cleaned(data_copy, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data_batch_1-keep.txt").write_text("not the cache's")
    os.symlink(victim, os.path.join(data_copy, cifar10.CACHE_DIRNAME))
    cifar10.load(data_copy, train_images=100)
    assert sorted(os.listdir(victim)) == ["data_batch_1-keep.txt"]


def test_bad_data_is_never_cached(data_copy):
    with open(os.path.join(data_copy, "data_batch_1"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, f, protocol=2)
    with pytest.raises(cifar10.DataError, match="data_batch_1: labels must lie in 0..9"):
        cifar10.load(data_copy)
    with pytest.raises(cifar10.DataError, match="data_batch_1: labels must lie in 0..9"):
        cifar10.load(data_copy)  # again: no cache entry for it
    assert not any(n.startswith("data_batch_1-") for n in cache_files(data_copy))


def test_processes_filling_the_cache_at_once_all_read_the_same_data(data_copy):
    code = (
        f"import sys, hashlib; sys.path.insert(0, {str(TRAINERS)!r}); import cifar10; "
        f"tr, te = cifar10.load({data_copy!r}); "
        "print(hashlib.sha256(tr.images.tobytes() + tr.labels.tobytes() + te.images.tobytes()).hexdigest())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    digests = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0] and len(set(digests)) == 1 and digests[0]
    names = cache_files(data_copy)
    assert len(names) == 24 and not [n for n in names if n.startswith(".tmp-")]  # no partial file left
    train, test = cifar10.load(data_copy, cache=False)
    warm_train, warm_test = cifar10.load(data_copy)
    assert np.array_equal(warm_train.images, train.images) and np.array_equal(warm_test.images, test.images)


def test_the_synthetic_set_is_readable_by_the_other_users_of_a_shared_data_folder(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        folder = cifar10.write_synthetic(str(tmp_path), seed=3, train_images=100, test_images=20)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
    assert all(stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode) & 0o044 == 0o044 for f in os.listdir(folder))
