"""The shared helpers in translution.utils."""

import json
import os

import numpy as np
import pytest

from translution import utils


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.json"
    utils.atomic_write_json(path, {"a": 1})
    utils.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(os.listdir(path.parent)) == ["f.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    utils.atomic_write_bytes(path, b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        utils.atomic_write(path, boom)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_remove_stale_temporaries(tmp_path):
    path = tmp_path / "last.pt"
    (tmp_path / ".last.pt.tmp-123-abc").write_bytes(b"x")
    (tmp_path / "other.tmp-1").write_bytes(b"x")
    assert utils.remove_stale_temporaries(path) == 1
    assert sorted(os.listdir(tmp_path)) == ["other.tmp-1"]


def test_digests_agree(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert utils.sha256_bytes(b"abc") == expected == utils.sha256_file(path)


def test_check_int_and_bool():
    assert utils.check_int("n", 3, 1) == 3
    assert utils.check_int("n", np.int64(4), 1) == 4
    with pytest.raises(ValueError, match="n must be an int >= 1, got -5"):
        utils.check_int("n", -5, 1)
    for bad in ("abc", 2.5, True, None):
        with pytest.raises(TypeError, match="n must be an int"):
            utils.check_int("n", bad)
    assert utils.check_bool("causal", False) is False
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="causal must be True or False"):
            utils.check_bool("causal", bad)


def test_stopwatch_accumulates():
    watch = utils.Stopwatch(1.0)
    with watch:
        pass
    assert watch.seconds >= 1.0
