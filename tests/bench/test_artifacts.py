"""bench artifacts: finding artifact directories, loading one on a runtime or saying why it is skipped."""

from __future__ import annotations

import shutil

import pytest

from bench import artifacts
from compress.errors import ArtifactError


def test_find_artifacts(tmp_path, runs_dir):
    shutil.copytree(runs_dir / "tfidf-a", runs_dir / ".tfidf-c.tmp-123")  # an artifact still being written
    assert [p.name for p in artifacts.find_artifacts(runs_dir)] == ["tfidf-a", "tfidf-b"]
    with pytest.raises(ArtifactError, match="no artifacts found under"):
        artifacts.find_artifacts(tmp_path / "empty")


def test_a_baseline_asked_for_torch_runs_in_its_own_library_and_onnx_it_lacks_is_a_skip(tfidf_artifact):
    assert artifacts.load_predictor(tfidf_artifact, "torch").backend == "sklearn"
    with pytest.raises(artifacts.Skipped, match="no model.onnx"):
        artifacts.load_predictor(tfidf_artifact, "ort")
