"""Scan and label readers/writers: round trips and every bad input named in the issue."""
import numpy as np
import pytest

from lidarseg.data import atomic_write_bytes, join_label, read_label, read_scan, split_label, write_label, write_scan
from lidarseg.errors import DataError


def test_scan_round_trip(tmp_path):
    pts = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    write_scan(tmp_path / "a" / "000000.bin", pts)
    out = read_scan(tmp_path / "a" / "000000.bin")
    assert out.dtype == np.float32 and out.shape == (100, 4)
    np.testing.assert_array_equal(out, pts)
    # byte layout: little-endian float32, point-major (as np.fromfile(..., float32).reshape(-1, 4))
    raw = (tmp_path / "a" / "000000.bin").read_bytes()
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(-1, 4), pts)


def test_label_round_trip_and_split(tmp_path):
    sem = np.array([0, 10, 40, 252, 65535], np.uint32)
    inst = np.array([0, 1, 0, 7, 65535], np.uint32)
    lab = join_label(sem, inst)
    assert lab[3] == 252 + (7 << 16)
    write_label(tmp_path / "x.label", lab)
    out = read_label(tmp_path / "x.label", num_points=5)
    assert out.dtype == np.uint32
    s, i = split_label(out)
    np.testing.assert_array_equal(s, sem)
    np.testing.assert_array_equal(i, inst)
    with pytest.raises(ValueError):
        join_label(np.array([70000]))


def test_bad_scan_files(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.bin"):
        read_scan(tmp_path / "nope.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(DataError, match="empty.*empty.bin"):
        read_scan(tmp_path / "empty.bin")
    (tmp_path / "odd.bin").write_bytes(b"\0" * 20)
    with pytest.raises(DataError, match=r"odd.bin.*20 bytes.*multiple of 16"):
        read_scan(tmp_path / "odd.bin")


def test_bad_label_files(tmp_path):
    write_label(tmp_path / "a.label", np.zeros(10, np.uint32))
    with pytest.raises(DataError, match=r"a.label has 10 labels but its scan has 11 points"):
        read_label(tmp_path / "a.label", num_points=11)
    (tmp_path / "b.label").write_bytes(b"\0" * 6)
    with pytest.raises(DataError, match="b.label.*multiple of 4"):
        read_label(tmp_path / "b.label")
    (tmp_path / "c.label").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_label(tmp_path / "c.label")
    with pytest.raises(DataError, match="not found"):
        read_label(tmp_path / "d.label")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    class Boom:
        def __len__(self):
            return 1

    with pytest.raises(TypeError):
        atomic_write_bytes(target, Boom())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_permissions_of_a_new_file(tmp_path, umask):
    import os
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.label", b"x")
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(old)
    # the same mode as a file created with open(), not mkstemp's private 0o600
    assert os.stat(tmp_path / "a.label").st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777
    assert os.stat(tmp_path / "a.label").st_mode & 0o777 == 0o666 & ~umask
