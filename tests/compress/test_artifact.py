import json
import os

import pytest

from compress import artifact as art
from compress.artifact import ArtifactInfo, atomic_artifact_dir, check_out, read_info, write_info
from compress.errors import ArtifactError


def _info(**kw):
    base = dict(kind="teacher", architecture="hf", labels=["a", "b"], hierarchy={"b": "a"}, thresholds=[0.3, 0.6])
    return ArtifactInfo(**{**base, **kw})


def test_round_trip(tmp_path):
    with atomic_artifact_dir(tmp_path / "run") as tmp:
        write_info(tmp, _info(metrics={"macro_roc_auc": 0.9}))
    info = read_info(tmp_path / "run", kinds=["teacher"])
    assert info.labels == ["a", "b"] and info.hierarchy == {"b": "a"} and info.thresholds == [0.3, 0.6]
    assert info.metrics["macro_roc_auc"] == 0.9
    assert "torch" in info.libraries and info.created


def test_exclusive_groups_round_trip_and_old_artifacts_read_without_them(tmp_path):
    with atomic_artifact_dir(tmp_path / "run") as tmp:
        write_info(tmp, _info(labels=["a", "b", "c"], hierarchy={"b": "a", "c": "a"}, exclusive=[["b", "c"]],
                              thresholds=[0.5, 0.5, 0.5]))
    info = read_info(tmp_path / "run")
    assert info.exclusive == [["b", "c"]] and info.schema().exclusive == (("b", "c"),)
    assert ArtifactInfo(kind="onnx", architecture="hf", **info.label_fields()).schema() == info.schema()
    old = json.loads((tmp_path / "run" / "artifact.json").read_text())
    del old["exclusive"]
    (tmp_path / "run" / "artifact.json").write_text(json.dumps(old))
    assert read_info(tmp_path / "run").schema().exclusive == ()


def test_crash_leaves_nothing_and_keeps_previous(tmp_path):
    target = tmp_path / "run"
    with atomic_artifact_dir(target) as tmp:
        write_info(tmp, _info())
    with pytest.raises(RuntimeError):
        with atomic_artifact_dir(target, overwrite=True) as tmp:
            write_info(tmp, _info(labels=["x", "y"], hierarchy={"y": "x"}))
            raise RuntimeError("crash mid-write")
    assert read_info(target).labels == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_wrong_kind_and_not_an_artifact(tmp_path):
    with atomic_artifact_dir(tmp_path / "run") as tmp:
        write_info(tmp, _info())
    with pytest.raises(ArtifactError, match="teacher artifact; this command needs one of: student"):
        read_info(tmp_path / "run", kinds=["student"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a modcompress artifact"):
        read_info(tmp_path / "empty")
    with pytest.raises(ArtifactError, match="not a directory"):
        read_info(tmp_path / "missing")
    (tmp_path / "run" / "artifact.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_info(tmp_path / "run")


def test_validation_and_future_format(tmp_path):
    with pytest.raises(ArtifactError, match="unknown artifact kind"):
        _info(kind="weird")
    with pytest.raises(ArtifactError, match="2 labels but 1 thresholds"):
        _info(thresholds=[0.5])
    (tmp_path / "new").mkdir()
    data = json.loads(_info().to_json())
    data["format_version"] = 99
    (tmp_path / "new" / "artifact.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="upgrade modcompress"):
        read_info(tmp_path / "new")


def test_replacing_an_earlier_artifact_needs_overwrite(tmp_path):
    target = tmp_path / "run"
    with atomic_artifact_dir(target) as tmp:
        write_info(tmp, _info())
    with pytest.raises(ArtifactError, match="already holds an earlier result; pass --overwrite"):
        with atomic_artifact_dir(target) as tmp:
            pytest.fail("the block must not run")
    with atomic_artifact_dir(target, overwrite=True) as tmp:
        write_info(tmp, _info(labels=["x", "y"], hierarchy={"y": "x"}))
    assert read_info(target).labels == ["x", "y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", ["user-dir", "file", "input-dir", "input-itself", "cwd", "proc", "empty"])
def test_out_that_is_not_ours_is_refused_before_anything_changes(tmp_path, monkeypatch, case):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    data = user / "data.csv"
    data.write_text("id,comment_text,toxic\n1,hi,0\n")
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    target, inputs, message = {
        "user-dir": (user, (), "non-empty directory that modcompress did not make"),
        "file": (tmp_path / "afile", (), "exists and is not a directory"),
        "input-dir": (user, (data,), "is or holds the input"),
        "input-itself": (data, (data,), "is or holds the input"),
        "cwd": (".", (), "is the current directory"),
        "proc": ("/proc/self/x", (), "is a system path"),
        "empty": ("", (), "empty path"),
    }[case]
    before = _snapshot(tmp_path)
    with pytest.raises(ArtifactError, match=message) as err:
        check_out(target, overwrite=True, inputs=inputs)
    assert "\n" not in str(err.value)
    with pytest.raises(ArtifactError):
        with atomic_artifact_dir(target, overwrite=True):
            pytest.fail("the block must not run")
    assert _snapshot(tmp_path) == before


def test_out_under_a_read_only_parent_is_refused(tmp_path):
    if os.geteuid() == 0:
        ro = "/proc/sys"  # root can write anywhere else; a system path stands in
        with pytest.raises(ArtifactError, match="system path"):
            check_out(f"{ro}/new/run")
        return
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o500)
    with pytest.raises(ArtifactError, match="not a writable directory"):
        check_out(parent / "new" / "run")


def test_empty_dir_and_new_nested_path_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty") == tmp_path / "empty"
    assert check_out(tmp_path / "a" / "b" / "run") == tmp_path / "a" / "b" / "run"
    assert not (tmp_path / "a").exists()  # checking makes nothing


def test_non_finite_metrics_are_written_as_null_strict_json(tmp_path):
    import numpy as np

    with atomic_artifact_dir(tmp_path / "run") as tmp:
        write_info(tmp, _info(metrics={"macro_roc_auc": float("nan"), "per_label": {"a": np.float64("nan"),
                                                                                    "b": 0.5},
                                       "curve": np.array([1.0, np.inf])}))
    text = (tmp_path / "run" / "artifact.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["metrics"] == {"macro_roc_auc": None, "per_label": {"a": None, "b": 0.5}, "curve": [1.0, None]}


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[1, 2]", "JSON list, not an object"),
    (b'{"kind": "teacher"}', "lacks architecture, labels"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": null}', "labels must be a non-empty list"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a"], "thresholds": "x"}', "thresholds must be"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a"], "max_length": "64"}', "max_length must be"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a"], "hierarchy": []}', "hierarchy must be"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a"], "extra": 3}', "extra must be an object"),
    (b'{"kind": "weird", "architecture": "hf", "labels": ["a"]}', "kind must be one of"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a", "b"], "thresholds": [0.5]}', "2 labels but 1"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a", "b"], "exclusive": "ab"}', "exclusive must be"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a", "b"], "exclusive": [["a", "c"]]}',
     "unknown label 'c'"),
    (b'{"kind": "teacher", "architecture": "hf", "labels": ["a", "b"], "hierarchy": {"b": "c"}}',
     "unknown label 'c'"),
])
def test_corrupt_artifact_json_is_one_line(tmp_path, content, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "artifact.json").write_bytes(content)
    with pytest.raises(ArtifactError, match=message) as err:
        read_info(tmp_path / "run")
    assert "\n" not in str(err.value) and "re-create it" in str(err.value)
    assert not art.is_ours(tmp_path / "run")  # and so never replaced by --out


def test_a_killed_write_is_cleaned_by_the_next_one(tmp_path):
    target = tmp_path / "run"
    stale = tmp_path / ".run.tmp-dead"
    stale.mkdir()
    (stale / art.MARKER_FILE).write_text("")
    (stale / "half.bin").write_bytes(b"x")
    foreign = tmp_path / ".run.tmp-notours"  # no marker: someone else's, left alone
    foreign.mkdir()
    live = tmp_path / ".run.tmp-live"  # a writer still running holds the lock
    live.mkdir()
    fd = art._lock(live / art.MARKER_FILE)
    try:
        with atomic_artifact_dir(target) as tmp:
            write_info(tmp, _info())
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.tmp-live", ".run.tmp-notours", "run"]


def test_a_kill_between_the_two_renames_is_repaired(tmp_path):
    target = tmp_path / "run"
    with atomic_artifact_dir(target) as tmp:
        write_info(tmp, _info())
    os.replace(target, tmp_path / ".run.old-4242")  # killed after moving the old one aside
    assert art.remove_stale_temporaries(target) == []
    assert read_info(target).labels == ["a", "b"]
