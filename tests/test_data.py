import os
import pickle

import numpy as np
import pytest

import cifar10


def test_synthetic_files_have_the_real_on_disk_format(synthetic_data):
    assert sorted(os.listdir(synthetic_data)) == sorted(
        [*cifar10.TRAIN_FILES, cifar10.TEST_FILE, cifar10.META_FILE, cifar10.SYNTHETIC_MARKER]
    )
    with open(os.path.join(synthetic_data, "data_batch_1"), "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert isinstance(batch[b"labels"], list) and set(batch[b"labels"]) <= set(range(10))


def test_loader_reads_the_synthetic_set_back(synthetic_data):
    train, test = cifar10.load(synthetic_data)
    assert train.images.shape == (2048, 3, 32, 32) and test.images.shape == (512, 3, 32, 32)
    assert train.images.dtype == np.float32 and train.images.min() >= 0.0 and train.images.max() <= 1.0
    with open(os.path.join(synthetic_data, "data_batch_1"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = raw[b"data"][0]
    # channel-major rows: 1024 R, then G, then B
    assert np.allclose(train.images[0, 1, 0, :], first[1024:1056] / 255.0)
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
