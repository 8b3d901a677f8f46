"""N-MNIST: the 40-bit event format, exact binning, the lazy Dataset and its errors."""
import math
import re
import sys

import numpy as np
import pytest
import torch

from antlr_snn.data import load_dataset, nmnist_split
from antlr_snn.data.nmnist import (EVENT_DTYPE, NMNIST, decode_events, events_to_frames,
                                   read_nmnist_bin)


def encode(events) -> bytes:
    """The original format, written independently of the decoder: (x, y, t_us, p) -> 5 bytes."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


EVENTS = [(0, 0, 0, 0), (33, 33, 2**23 - 1, 1), (3, 5, 66051, 1), (12, 7, 1000, 0), (1, 2, 255, 1)]


def feature(x, y, p):
    return p * 34 * 34 + y * 34 + x


def test_encoding_helper_matches_spec():
    # byte2 bit7 = polarity, byte2 bits 6..0 + byte3 + byte4 = 23-bit timestamp
    assert encode([(3, 5, 66051, 1)]) == bytes([3, 5, 0x81, 0x02, 0x03])


def test_decode_exact(tmp_path):
    path = tmp_path / "00001.bin"
    path.write_bytes(encode(EVENTS))
    ev = read_nmnist_bin(path)
    assert ev.dtype == EVENT_DTYPE
    decoded = zip(*(ev[f].tolist() for f in ("x", "y", "t", "p")))
    assert list(decoded) == EVENTS


def test_decoding_is_tonics_reader(tmp_path, monkeypatch):
    """The bytes go through tonic.io.read_mnist_file; the result equals the spec's events."""
    tonic_io = pytest.importorskip("tonic.io")
    calls = []
    real = tonic_io.read_mnist_file

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(tonic_io, "read_mnist_file", spy)
    path = tmp_path / "00001.bin"
    path.write_bytes(encode(EVENTS))
    ev = read_nmnist_bin(path)
    assert len(calls) == 1
    assert list(zip(*(ev[f].tolist() for f in ("x", "y", "t", "p")))) == EVENTS


def test_missing_tonic_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "a.bin").write_bytes(encode(EVENTS))
    monkeypatch.setitem(sys.modules, "tonic", None)
    with pytest.raises(ValueError, match=r"N-MNIST is read with tonic, which is not installed "
                                         r".*pip install 'antlr-snn\[data\]'"):
        read_nmnist_bin(tmp_path / "a.bin")
    # binning needs no tonic: nmnist-sim keeps working without the extra
    assert events_to_frames(np.zeros(0, dtype=EVENT_DTYPE), num_steps=3).shape == (3, 2312)


def test_empty_file_is_corrupt(tmp_path):
    """Every N-MNIST recording has events: a 0-byte file is corrupt, not an empty sample."""
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.bin: empty file \(0 bytes\): corrupt"):
        read_nmnist_bin(tmp_path / "e.bin")
    ev = decode_events(b"")  # the byte-level decoder still takes an empty event list
    assert len(ev) == 0 and int(events_to_frames(ev).sum()) == 0


def test_length_not_multiple_of_5(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(encode(EVENTS)[:-2])
    with pytest.raises(ValueError, match=r"cut\.bin: length 23 bytes is not a multiple of 5"):
        read_nmnist_bin(path)


@pytest.mark.parametrize("x, y", [(34, 0), (0, 34), (255, 241)])
def test_coordinates_out_of_range(tmp_path, x, y):
    path = tmp_path / "bad.bin"
    path.write_bytes(encode([(1, 1, 5, 0), (x, y, 6, 1)]))
    with pytest.raises(ValueError, match=rf"bad\.bin: event 1 has x={x}, y={y} outside"):
        read_nmnist_bin(path)


def test_timestamp_overflow_marker():
    """y == 240 marks a timestamp overflow (Read_Ndataset.m): dropped, later events + 2**13 us."""
    ev = decode_events(encode([(1, 1, 100, 0), (0, 240, 0, 0), (2, 3, 50, 1), (0, 240, 0, 0),
                               (4, 5, 7, 1)]))
    assert ev["x"].tolist() == [1, 2, 4] and ev["y"].tolist() == [1, 3, 5]
    assert ev["t"].tolist() == [100, 50 + 8192, 7 + 2 * 8192]


def test_timestamp_overflow_markers_at_the_ends():
    marker = (0, 240, 0, 0)
    ev = decode_events(encode([marker, marker, (5, 6, 2**23 - 1, 1), (7, 8, 3, 0), marker]))
    assert ev["x"].tolist() == [5, 7] and ev["p"].tolist() == [1, 0]
    assert ev["t"].tolist() == [2**23 - 1 + 2 * 8192, 3 + 2 * 8192]
    assert len(decode_events(encode([marker] * 3))) == 0
    # a bad coordinate is counted among the real events, markers left out
    with pytest.raises(ValueError, match=r"event 1 has x=1, y=241 outside"):
        decode_events(encode([(1, 1, 5, 0), marker, (1, 241, 6, 1)]), "f.bin")


def test_binning_exact_default_1ms():
    ev = decode_events(encode([
        (1, 2, 0, 1),         # bin 0
        (1, 2, 999, 1),       # bin 0 again, same pixel/polarity: still one spike
        (1, 2, 999, 0),       # bin 0, other polarity: its own spike
        (1, 2, 1000, 1),      # bin 1
        (33, 33, 299_999, 1),  # last bin
        (4, 4, 300_000, 1),   # at the window's end: dropped
        (4, 4, 8_000_000, 0),  # far beyond: dropped
    ]))
    frames = events_to_frames(ev)
    expected = torch.zeros(300, 2312, dtype=torch.uint8)
    expected[0, feature(1, 2, 1)] = 1
    expected[0, feature(1, 2, 0)] = 1
    expected[1, feature(1, 2, 1)] = 1
    expected[299, feature(33, 33, 1)] = 1
    assert frames.dtype == torch.uint8 and frames.shape == (300, 2312)
    assert torch.equal(frames, expected)


def test_binning_exact_coarse_and_fractional():
    ev = decode_events(encode([(0, 0, 2999, 0), (0, 0, 3000, 0), (5, 6, 299_999, 1)]))
    frames = events_to_frames(ev, num_steps=100)  # 3 ms bins
    assert frames.sum() == 3
    assert frames[0, 0] == 1 and frames[1, 0] == 1 and frames[99, feature(5, 6, 1)] == 1
    ev = decode_events(encode([(2, 0, 499, 1), (2, 0, 500, 1), (2, 0, 1499, 1), (2, 0, 1500, 1)]))
    frames = events_to_frames(ev, num_steps=3, window_ms=1.5)  # 500 us bins, 1500 dropped
    assert frames[:, feature(2, 0, 1)].tolist() == [1, 1, 1] and frames.sum() == 3


def make_root(root, per_digit=2, split_folder="Train"):
    """Train/0..9 (or Test/0..9), ``per_digit`` files each; file j of digit d: one ON event
    at x=d, y=j, t=j ms."""
    for d in range(10):
        folder = root / split_folder / str(d)
        folder.mkdir(parents=True)
        for j in reversed(range(per_digit)):  # written out of order: listing must sort
            (folder / f"{j:05d}.bin").write_bytes(encode([(d, j, j * 1000, 1)]))
    return root


def test_dataset_lists_sorted_and_decodes(tmp_path):
    make_root(tmp_path, per_digit=2, split_folder="Test")
    ds = NMNIST(tmp_path, "test", num_steps=10, window_ms=10.0)
    assert len(ds) == 20
    listed = [f.split("/")[-2:] for f in ds.files[:3]]
    assert listed == [["0", "00000.bin"], ["0", "00001.bin"], ["1", "00000.bin"]]
    assert ds.labels == [d for d in range(10) for _ in range(2)]
    spikes, label = ds[7]  # digit 3, file 1: x=3, y=1, t=1 ms
    assert label == 3 and spikes.dtype == torch.uint8 and spikes.shape == (10, 2312)
    assert spikes.sum() == 1 and spikes[1, feature(3, 1, 1)] == 1


def _bin_files(root, split_folder):
    return sorted((root / split_folder).glob("*/*.bin"))


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), r"length 3 bytes is not a multiple of 5"),
    (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
    (lambda p: (p.unlink(), p.mkdir()), r"not a regular file \(a directory\)"),
])
def test_bad_files_found_when_listing(tmp_path, damage, why):
    make_root(tmp_path, per_digit=2)
    files = _bin_files(tmp_path, "Train")
    for p in (files[9], files[4]):  # Train/4/00001.bin and Train/2/00000.bin
        damage(p)
    with pytest.raises(ValueError) as err:
        NMNIST(tmp_path, "train")
    msg = str(err.value)
    assert msg.startswith(f"2 of 20 N-MNIST .bin files under {tmp_path / 'Train'} are corrupt")
    assert re.search(rf"first: {re.escape(str(files[4]))}: {why}", msg), msg
    with pytest.raises(ValueError, match="2 of 20"):
        load_dataset("nmnist", "val", data_dir=tmp_path)


def test_bad_test_file_does_not_block_train(tmp_path):
    make_root(tmp_path, per_digit=1, split_folder="Train")
    make_root(tmp_path, per_digit=1, split_folder="Test")
    (tmp_path / "Test" / "3" / "00000.bin").write_bytes(b"\x01\x02")
    assert len(NMNIST(tmp_path, "train")) == 10
    with pytest.raises(ValueError, match=r"1 of 10 .*Test/3/00000\.bin: length 2 bytes"):
        NMNIST(tmp_path, "test")


def test_dataset_is_lazy_and_reports_corrupt_file(tmp_path):
    make_root(tmp_path, per_digit=1)
    ds = NMNIST(tmp_path, "train")
    (tmp_path / "Train" / "4" / "00000.bin").write_bytes(b"\x01\x02\x03")  # after init
    assert ds[3][1] == 3
    with pytest.raises(ValueError, match=r"Train/4/00000\.bin: length 3 bytes"):
        ds[4]


def test_missing_folders_say_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        NMNIST(tmp_path, "train")
    assert "Train/0..9/*.bin" in str(err.value) and "Test/0..9/*.bin" in str(err.value)
    make_root(tmp_path, per_digit=1)
    with pytest.raises(FileNotFoundError, match="Test/0 not found"):
        NMNIST(tmp_path, "test")


def test_no_files_at_all(tmp_path):
    for d in range(10):
        (tmp_path / "Test" / str(d)).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .bin files"):
        NMNIST(tmp_path, "test")


def test_val_carve_is_per_digit_and_disjoint(tmp_path):
    make_root(tmp_path, per_digit=7)
    train, val = nmnist_split(tmp_path, "train"), nmnist_split(tmp_path, "val")
    assert len(train) == 60 and len(val) == 10  # 7 // 6 = 1 file per digit
    assert not set(train.indices) & set(val.indices)
    assert [val.dataset.files[i].split("/")[-1] for i in val.indices] == ["00006.bin"] * 10
    assert sorted(val[i][1] for i in range(10)) == list(range(10))


def test_load_dataset_nmnist(tmp_path):
    make_root(tmp_path, per_digit=1, split_folder="Test")
    ds = load_dataset("nmnist", "test", data_dir=tmp_path, num_steps=50)
    spikes, label = ds[9]
    assert spikes.shape == (50, 2312) and label == 9 and spikes[0, feature(9, 0, 1)] == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, "num_steps must be an integer >= 1, got 0"),
    ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
    ({"num_steps": -3}, "num_steps must be an integer >= 1, got -3"),
    ({"window_ms": 0}, "window_ms must be a finite number > 0, got 0"),
    ({"window_ms": -1.0}, "window_ms must be a finite number > 0, got -1.0"),
    ({"window_ms": math.nan}, "window_ms must be a finite number > 0, got nan"),
    ({"window_ms": math.inf}, "window_ms must be a finite number > 0, got inf"),
])
def test_parameters_checked_at_construction(tmp_path, kwargs, message):
    make_root(tmp_path, per_digit=1, split_folder="Test")
    with pytest.raises(ValueError, match=re.escape(message)):
        NMNIST(tmp_path, "test", **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        events_to_frames(decode_events(encode([(1, 1, 5, 1)])), **kwargs)
    if "num_steps" in kwargs:
        with pytest.raises(ValueError, match=re.escape(message)):
            load_dataset("nmnist", "test", data_dir=tmp_path, **kwargs)


def test_numpy_integer_num_steps_accepted(tmp_path):
    make_root(tmp_path, per_digit=1, split_folder="Test")
    assert NMNIST(tmp_path, "test", num_steps=np.int64(7))[0][0].shape == (7, 2312)
