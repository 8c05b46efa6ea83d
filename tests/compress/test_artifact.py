import json

import pytest

from compress.artifact import ArtifactInfo, atomic_artifact_dir, read_info, write_info
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


def test_crash_leaves_nothing_and_keeps_previous(tmp_path):
    target = tmp_path / "run"
    with atomic_artifact_dir(target) as tmp:
        write_info(tmp, _info())
    with pytest.raises(RuntimeError):
        with atomic_artifact_dir(target) as tmp:
            write_info(tmp, _info(labels=["x", "y"]))
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
