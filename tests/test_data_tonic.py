"""tonic:NAME data sets: files written here in each real format (tonic's DVS Gesture .npy, the
SHD/SSC HDF5 layout, N-MNIST .bin), read by tonic's classes without download, binned by
tonic's ToFrame (n_time_bins) into binary spikes; missing and damaged files give one line."""
import pickle
import re
import sys

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")
pytest.importorskip("tonic")

from antlr_snn.data import TonicEvents, load_dataset  # noqa: E402
from antlr_snn.errors import DataNotFound, UserError  # noqa: E402
from test_data_nmnist import encode as encode_nmnist, make_root  # noqa: E402

W = 128  # DVS Gesture sensor 128x128x2


def gesture_feature(x, y, p):
    return p * W * W + y * W + x


def write_gesture(root, split_folder, user, label, events):
    """tonic's DVS Gesture file: int array [N, 4] of (x, y, p, t in ms) in userNN_LIGHTING/."""
    folder = root / "DVSGesture" / split_folder / user
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{label}.npy", np.asarray(events, dtype=np.int64).reshape(-1, 4))
    return folder / f"{label}.npy"


def write_hdf5(path, samples, keys):
    """The SHD / SSC layout: spikes/times (seconds, float16) and spikes/units per sample,
    labels, extra/keys and extra/speaker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),),
                                 dtype=h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (len(samples),),
                                 dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u, _) in enumerate(samples):
            times[i] = np.asarray(t, dtype=np.float16)
            units[i] = np.asarray(u, dtype=np.uint16)
        f["labels"] = np.array([y for _, _, y in samples], dtype=np.uint16)
        f["extra/keys"] = np.array([k.encode() for k in keys])
        f["extra/speaker"] = np.zeros(len(samples), dtype=np.uint16)


# ------------------------------------------------------------------ binning, exact

def test_dvs_gesture_binned_exactly(tmp_path):
    # duration 1000 ms, T = 4: tonic's bins are 250,000 us wide from the first event
    write_gesture(tmp_path, "ibmGestureTest", "user24_led", 6, [
        (3, 5, 1, 0), (3, 5, 1, 40),   # bin 0 twice, same pixel and polarity: one spike
        (3, 5, 0, 40),                 # bin 0, other polarity: its own spike
        (7, 2, 0, 250),                # bin 1 (x != y: a swap would show)
        (127, 126, 1, 999),            # bin 3
        (0, 0, 0, 1000),               # the end of bin 3: dropped by tonic
    ])
    spikes, label = load_dataset("tonic:DVSGesture", "test", data_dir=tmp_path, num_steps=4)[0]
    expected = torch.zeros(4, 2 * W * W, dtype=torch.uint8)
    for t, (x, y, p) in [(0, (3, 5, 1)), (0, (3, 5, 0)), (1, (7, 2, 0)), (3, (127, 126, 1))]:
        expected[t, gesture_feature(x, y, p)] = 1
    assert label == 6 and spikes.dtype == torch.uint8
    assert torch.equal(spikes, expected)


def test_shd_binned_exactly_and_unsorted_times(tmp_path):
    samples = [([0.0, 0.25, 0.25, 0.5, 1.0], [10, 699, 699, 3, 5], 13),
               ([0.5, 0.0, 0.75, 0.25], [1, 2, 3, 4], 2),  # out of order: sorted first
               ([], [], 7)]                                 # no spikes at all
    write_hdf5(tmp_path / "SHD" / "shd_test.h5", samples, [f"k{i}" for i in range(20)])
    data = load_dataset("tonic:SHD", "test", data_dir=tmp_path, num_steps=4)
    assert len(data) == 3 and data.num_classes == 20
    spikes, label = data[0]  # 250,000 us bins; t = 1 s is the end of bin 3: dropped
    expected = torch.zeros(4, 700, dtype=torch.uint8)
    expected[0, 10] = expected[1, 699] = expected[2, 3] = 1
    assert label == 13 and torch.equal(spikes, expected)
    spikes, label = data[1]  # 0.75 s duration: 187,500 us bins
    expected = torch.zeros(4, 700, dtype=torch.uint8)
    expected[0, 2] = expected[1, 4] = expected[2, 1] = 1  # t = 0.75 s ends bin 3: dropped
    assert label == 2 and torch.equal(spikes, expected)
    spikes, label = data[2]
    assert label == 7 and spikes.shape == (4, 700) and spikes.sum() == 0


def test_tonic_nmnist_uses_tonic_binning(tmp_path):
    make_root(tmp_path / "NMNIST", per_digit=1, split_folder="Test")
    (tmp_path / "NMNIST" / "Test" / "4" / "00000.bin").write_bytes(encode_nmnist(
        [(1, 2, 100, 1), (1, 2, 150, 1), (30, 3, 500, 0), (9, 9, 1100, 1)]))
    data = load_dataset("tonic:NMNIST", "test", data_dir=tmp_path, num_steps=2)
    spikes, label = data[4]  # 1000 us over 2 bins of 500 us from t = 100
    expected = torch.zeros(2, 2312, dtype=torch.uint8)
    expected[0, 34 * 34 + 2 * 34 + 1] = 1
    expected[0, 3 * 34 + 30] = 1  # t = 500 is in [100, 600)
    assert label == 4 and torch.equal(spikes, expected)


# ------------------------------------------------------------------ splits and layout

def test_val_is_last_sixth_of_each_class_in_path_order(tmp_path):
    # 13 recordings of class 0 (users 01..13) and 7 of class 1 (users 01..07)
    for user in range(1, 14):
        write_gesture(tmp_path, "ibmGestureTrain", f"user{user:02d}_lab", 0,
                      [(user, 0, 0, 0), (user, 0, 0, 3)])
        if user <= 7:
            write_gesture(tmp_path, "ibmGestureTrain", f"user{user:02d}_led", 1,
                          [(user, 1, 1, 0), (user, 1, 1, 5)])
    train = load_dataset("tonic:DVSGesture", "train", data_dir=tmp_path, num_steps=3)
    val = load_dataset("tonic:DVSGesture", "val", data_dir=tmp_path, num_steps=3)
    assert len(train) == 11 + 6 and len(val) == 2 + 1
    files = train.dataset.files
    assert [files[i].split("/")[-2] for i in val.indices] == ["user12_lab", "user13_lab",
                                                             "user07_led"]
    assert not set(train.indices) & set(val.indices)
    assert sorted(int(val[i][0].sum()) for i in range(3)) == [1, 1, 1]
    assert [val[i][1] for i in range(3)] == [0, 0, 1]


def test_ssc_has_its_own_validation_file(tmp_path):
    keys = [f"w{i}" for i in range(35)]
    for split, label in (("train", 0), ("valid", 34), ("test", 5)):
        write_hdf5(tmp_path / "SSC" / f"ssc_{split}.h5", [([0.0, 0.5], [1, 2], label)] * 2, keys)
    got = {s: load_dataset("tonic:SSC", s, data_dir=tmp_path, num_steps=5) for s in
           ("train", "val", "test")}
    assert {s: [d[i][1] for i in range(len(d))] for s, d in got.items()} == {
        "train": [0, 0], "val": [34, 34], "test": [5, 5]}
    assert got["val"].num_classes == 35


def test_files_directly_in_data_dir(tmp_path):
    write_hdf5(tmp_path / "shd_test.h5", [([0.0, 0.5], [1, 2], 3)], ["k"] * 20)
    assert load_dataset("tonic:SHD", "test", data_dir=tmp_path, num_steps=2)[0][1] == 3


def test_items_pickle_for_worker_processes(tmp_path):
    write_gesture(tmp_path, "ibmGestureTest", "user24_led", 2, [(1, 2, 1, 0), (5, 6, 0, 30)])
    data = load_dataset("tonic:DVSGesture", "test", data_dir=tmp_path, num_steps=3)
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[0][0], data[0][0]) and clone[0][1] == 2


# ------------------------------------------------------------------ missing files: one line

@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt by tonic fails the test."""
    import tonic.dataset
    import tonic.download_utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"tonic tried to download {args[:1]}")
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", refuse)
    monkeypatch.setattr(tonic.download_utils, "download_and_extract_archive", refuse)


@pytest.mark.parametrize("name, split, needles", [
    ("DVSGesture", "train", ["DVSGesture/ibmGestureTrain/userNN_LIGHTING/LABEL.npy",
                             "ibmGestureTrain.tar.gz"]),
    ("DVSGesture", "test", ["DVSGesture/ibmGestureTest/userNN_LIGHTING/LABEL.npy"]),
    ("SHD", "val", ["SHD/shd_train.h5", "SHD/shd_test.h5"]),
    ("SSC", "val", ["no samples in", "SSC/ssc_valid.h5:"]),
    ("NMNIST", "test", ["NMNIST/Train/0..9/*.bin"]),
])
def test_missing_files_say_where_to_put_them(tmp_path, no_download, name, split, needles):
    with pytest.raises(DataNotFound) as err:
        load_dataset(f"tonic:{name}", split, data_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "nothing is downloaded" in msg
    for needle in needles:
        assert needle in msg, msg


def test_folder_without_samples_is_missing(tmp_path, no_download):
    (tmp_path / "DVSGesture" / "ibmGestureTest" / "user24_led").mkdir(parents=True)
    with pytest.raises(DataNotFound, match="no samples in .*DVSGesture/ibmGestureTest: put"):
        load_dataset("tonic:DVSGesture", "test", data_dir=tmp_path)


def test_no_data_dir_and_unknown_name():
    with pytest.raises(DataNotFound, match=r"tonic:SHD needs a data folder .*DIR/SHD/shd_train"):
        load_dataset("tonic:SHD", "train")
    with pytest.raises(UserError, match="'CIFAR10DVS' is not supported; choose one of NMNIST"):
        load_dataset("tonic:CIFAR10DVS", "train", data_dir="/x")


def test_missing_tonic_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tonic", None)
    with pytest.raises(UserError, match=r"not installed .*pip install 'antlr-snn\[data\]'"):
        load_dataset("tonic:SHD", "test", data_dir=tmp_path)


# ------------------------------------------------------------------ damaged files: one line

def test_garbage_hdf5_names_the_file(tmp_path):
    (tmp_path / "SHD").mkdir()
    (tmp_path / "SHD" / "shd_test.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(UserError, match=r"tonic:SHD: cannot read .*SHD/shd_test\.h5: ") as err:
        load_dataset("tonic:SHD", "test", data_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_unit_outside_the_sensor(tmp_path):
    write_hdf5(tmp_path / "SHD" / "shd_test.h5", [([0.0, 0.5], [1, 700], 3)], ["k"] * 20)
    data = load_dataset("tonic:SHD", "test", data_dir=tmp_path, num_steps=2)
    with pytest.raises(UserError, match=r"shd_test\.h5 sample 0: event 1 has x=700 outside the "
                                        r"700x1x1 sensor"):
        data[0]


@pytest.mark.parametrize("event, field", [((128, 0, 1, 5), "x=128"), ((0, 128, 1, 5), "y=128")])
def test_gesture_event_outside_the_sensor(tmp_path, event, field):
    path = write_gesture(tmp_path, "ibmGestureTest", "user24_led", 1, [(1, 1, 0, 0), event])
    data = load_dataset("tonic:DVSGesture", "test", data_dir=tmp_path, num_steps=2)
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}: event 1 has {field} outside"):
        data[0]


def test_garbage_npy_names_the_file(tmp_path):
    path = write_gesture(tmp_path, "ibmGestureTest", "user24_led", 1, [(1, 1, 0, 0)])
    path.write_bytes(b"\x93NUMPY garbage")
    data = load_dataset("tonic:DVSGesture", "test", data_dir=tmp_path, num_steps=2)
    with pytest.raises(UserError, match=rf"tonic:DVSGesture: cannot read {re.escape(str(path))}"):
        data[0]


def test_label_outside_the_classes(tmp_path):
    write_gesture(tmp_path, "ibmGestureTest", "user24_led", 11, [(1, 1, 0, 0)])
    with pytest.raises(UserError, match=r"1 samples .* labels outside 0\.\.10, for example 11"):
        load_dataset("tonic:DVSGesture", "test", data_dir=tmp_path)


def test_tonic_nmnist_keeps_the_nmnist_checks(tmp_path):
    make_root(tmp_path / "NMNIST", per_digit=1, split_folder="Test")
    bad = tmp_path / "NMNIST" / "Test" / "3" / "00000.bin"
    bad.write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match=r"1 of 10 .*Test/3/00000\.bin: length 2 bytes"):
        load_dataset("tonic:NMNIST", "test", data_dir=tmp_path)
    bad.write_bytes(encode_nmnist([(1, 1, 5, 0)]))
    data = load_dataset("tonic:NMNIST", "test", data_dir=tmp_path, num_steps=2)
    bad.write_bytes(b"")  # damaged after listing: found when read
    with pytest.raises(UserError, match=r"Test/3/00000\.bin: empty file"):
        data[3]
    bad.write_bytes(encode_nmnist([(1, 1, 5, 0), (40, 1, 9, 1)]))
    with pytest.raises(UserError, match=r"Test/3/00000\.bin: event 1 has x=40"):
        data[3]


def test_tonic_events_rejects_a_split_it_lacks(tmp_path):
    with pytest.raises(UserError, match="has the splits train, test, not 'val'"):
        TonicEvents("SHD", tmp_path, "val", num_steps=3)


# ------------------------------------------------------------------ the command line

def write_toy_shd(folder, per_split=(("train", 240), ("test", 60))):
    """20 classes, each firing its own 35 of the 700 units at random times over 1 s."""
    rng = np.random.default_rng(0)
    for split, n in per_split:
        samples = []
        for i in range(n):
            t = np.sort(np.r_[0.0, rng.uniform(0, 1, 400), 1.0]).round(3)
            samples.append((t, (i % 20) * 35 + rng.integers(0, 35, len(t)), i % 20))
        write_hdf5(folder / "SHD" / f"shd_{split}.h5", samples, [f"k{i}" for i in range(20)])


def test_cli_trains_on_tonic_shd(tmp_path, capsys, one_thread):
    from antlr_snn.cli import main
    write_toy_shd(tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--dataset", "tonic:SHD", "--data-dir", str(tmp_path), "--hidden",
                 "30", "--num-steps", "20", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    ckpt = torch.load(out / "best.pt", weights_only=False)
    assert [(l["in_features"], l["out_features"]) for l in ckpt["layers"]] == [(700, 30), (30, 20)]  # 20 classes: 20 outputs
    res = __import__("json").loads((out / "results.json").read_text())
    trial = res["trials"][0]
    assert trial["test_n"] == 60 and trial["test_accuracy"] > 0.5  # chance 0.05; measured 1.0
    code = main(["evaluate", "--checkpoint", str(out / "best.pt")])
    assert code == 0 and '"accuracy": ' in capsys.readouterr().out


def test_cli_missing_tonic_files_one_line(tmp_path, capsys, no_download):
    from antlr_snn.cli import main
    code = main(["train", "--dataset", "tonic:DVSGesture", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert "DVSGesture/ibmGestureTrain/userNN_LIGHTING/LABEL.npy" in err[0]
