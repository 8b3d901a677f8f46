"""IDX reader: exact round trips and a clear error for every kind of broken file."""
import gzip

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from antlr_snn.data.idx import read_idx


def idx_bytes(magic: int, dims, data: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + data


def write(path, payload: bytes, gz: bool = False):
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(payload)
    return path


def test_raw_images_exact(tmp_path):
    data = bytes(range(24))
    p = write(tmp_path / "img-idx3-ubyte", idx_bytes(0x803, (2, 3, 4), data))
    arr = read_idx(p)
    assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
    assert arr[1, 2, 3] == 23 and arr[0, 1, 0] == 4
    assert arr.tobytes() == data
    arr[0, 0, 0] = 1  # writable, so torch.from_numpy does not warn


def test_gzipped_labels_exact(tmp_path):
    payload = idx_bytes(0x801, (5,), bytes([7, 2, 1, 0, 9]))
    p = write(tmp_path / "lab-idx1-ubyte.gz", payload, gz=True)
    assert read_idx(p).tolist() == [7, 2, 1, 0, 9]


def test_gzip_detected_by_content_without_suffix(tmp_path):
    p = write(tmp_path / "lab-idx1-ubyte", idx_bytes(0x801, (2,), bytes([3, 4])), gz=True)
    assert read_idx(p).tolist() == [3, 4]


def test_empty_set(tmp_path):
    p = write(tmp_path / "e", idx_bytes(0x803, (0, 28, 28), b""))
    assert read_idx(p).shape == (0, 28, 28)


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.integers(0, 5), st.integers(1, 4), st.integers(1, 4)), gz=st.booleans(),
       seed=st.integers(0, 2**16))
def test_round_trip_property(tmp_path_factory, shape, gz, seed):
    data = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    p = tmp_path_factory.mktemp("idx") / ("x.gz" if gz else "x")
    write(p, idx_bytes(0x803, shape, data.tobytes()), gz=gz)
    np.testing.assert_array_equal(read_idx(p), data)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-idx3-ubyte"):
        read_idx(tmp_path / "nope-idx3-ubyte")


@pytest.mark.parametrize("gz", [False, True])
def test_bad_magic(tmp_path, gz):
    payload = idx_bytes(0x00000D03, (1, 1, 1), b"\x00")
    p = write(tmp_path / ("bad.gz" if gz else "bad"), payload, gz=gz)
    with pytest.raises(ValueError, match=r"bad\S*: bad IDX magic number 0x00000d03"):
        read_idx(p)


def test_truncated_header(tmp_path):
    p = write(tmp_path / "th", idx_bytes(0x803, (2, 3, 4), b"")[:9])
    with pytest.raises(ValueError, match=r"th: truncated IDX header \(9 of 16 bytes\)"):
        read_idx(p)


def test_too_short_for_magic(tmp_path):
    p = write(tmp_path / "tiny", b"\x00\x00")
    with pytest.raises(ValueError, match="tiny: truncated IDX file"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    p = write(tmp_path / "td", idx_bytes(0x803, (2, 3, 4), bytes(23)), gz=gz)
    with pytest.raises(ValueError, match=r"td: truncated IDX data: .*24 bytes, found 23"):
        read_idx(p)


def test_trailing_garbage(tmp_path):
    p = write(tmp_path / "tg", idx_bytes(0x801, (3,), bytes(5)))
    with pytest.raises(ValueError, match="tg: size mismatch: 2 trailing bytes"):
        read_idx(p)


def test_corrupt_gzip(tmp_path):
    p = write(tmp_path / "c.gz", b"this is not gzip data")
    with pytest.raises(ValueError, match=r"c\.gz: corrupt gzip"):
        read_idx(p)


def test_cut_gzip_stream(tmp_path):
    good = gzip.compress(idx_bytes(0x801, (1000,), bytes(range(250)) * 4))
    p = write(tmp_path / "cut.gz", good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz: corrupt gzip"):
        read_idx(p)


def test_huge_header_dims_give_exact_sizes_not_overflow(tmp_path):
    """4e9 x 4e9 x 4e9 overflows int64 in np.prod; the message must carry the exact size."""
    p = write(tmp_path / "huge", idx_bytes(0x803, (4_000_000_000,) * 3, bytes(10)))
    with pytest.raises(ValueError) as err:
        read_idx(p)
    msg = str(err.value)
    assert "huge: truncated IDX data" in msg and f"= {4_000_000_000 ** 3} bytes, found 10" in msg
    assert "-" not in msg.split("huge:")[1]  # no wrapped-around negative sizes
