import json
import os

import pytest

from cifarbudget.errors import UserError
from cifarbudget.io import atomic_dir, atomic_path, write_csv, write_json


def test_atomic_path_keeps_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


def test_atomic_dir_swaps_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "prepared"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "first"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import tempfile

    write_json(tmp_path / "m.json", {"v": 1})

    def refuse(*args, **kwargs):  # what a read-only folder answers (root ignores chmod)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match=r"m\.json: the folder is not writable"):
        write_json(tmp_path / "m.json", {"v": 2})
    assert '"v": 1' in (tmp_path / "m.json").read_text()


def test_full_disk_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    import errno

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    target = tmp_path / "m.json"
    with pytest.raises(UserError, match=r"m\.json: the disk is full"):
        write_json(target, {"v": 1})
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_csv_header_and_rows(tmp_path):
    write_csv(tmp_path / "h.csv", [{"step": 1, "acc": 0.5}, {"step": 2, "acc": 0.75}])
    assert (tmp_path / "h.csv").read_text().splitlines() == ["step,acc", "1,0.5", "2,0.75"]


def test_a_file_in_place_of_the_folder_is_a_clear_error(tmp_path):
    (tmp_path / "plots").write_text("not a folder")
    with pytest.raises(UserError, match="a file stands where a folder is needed"):
        write_json(tmp_path / "plots" / "m.json", {"v": 1})


def test_outputs_get_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"v": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def strict_json(text: str):
    """json.loads refusing NaN, Infinity and -Infinity, which JSON does not define."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_non_finite_numbers_as_null_and_says_which(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"fid": float("nan"), "kid": {"mean": float("inf"), "std": 0.5},
                      "curve": [1.0, float("-inf")], "steps": 3})
    metrics = strict_json(path.read_text())
    assert metrics["fid"] is None and metrics["kid"] == {"mean": None, "std": 0.5}
    assert metrics["curve"] == [1.0, None] and metrics["steps"] == 3
    assert metrics["non_finite"] == ("fid was nan; kid.mean was inf; curve[1] was -inf: "
                                     "written as null (JSON has no such numbers)")


def test_write_json_of_finite_values_is_unchanged(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5, "classes": ["a"]})
    assert strict_json(path.read_text()) == {"accuracy": 0.5, "classes": ["a"]}
