"""The precision-sensitive checks pass whatever ``mixed_precision=auto`` resolves to.

On an AVX2-only CPU ``auto`` means fp32; on an AMX / AVX512-BF16 one it means bf16. CI runs on one
of them, so this runs the checks that depend on it again, in a child pytest, with ``auto`` forced
to each (``MODCOMPRESS_AUTO_PRECISION``, read by :func:`compress.precision.choose_precision`; the suite's
conftest pins it to ``no``, so nothing is measured).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress.precision import AUTO_ENV, TRAINING, choose_precision

ROOT = Path(__file__).resolve().parents[1]
SENSITIVE = [
    "tests/compress/test_students.py::test_student_trains_saves_and_reloads_identically",
    "tests/compress/test_train.py",
    "tests/bench/test_train_speed.py",
]


class _NotMeasured:
    """A probe that fails the test if anything measures it."""

    task = TRAINING

    def signature(self) -> dict:
        return {"model": "none"}

    def measure(self) -> tuple[float, float]:
        raise AssertionError("a forced auto must not measure")


@pytest.mark.parametrize(("forced", "expected"), [("no", "no"), ("fp32", "no"), ("bf16", "bf16")])
def test_auto_can_be_forced(monkeypatch, forced, expected):
    monkeypatch.setenv(AUTO_ENV, forced)
    assert choose_precision("auto", torch.device("cpu"), _NotMeasured()).precision == expected
    assert choose_precision("no", torch.device("cpu"), _NotMeasured()).precision == "no"  # an explicit choice wins


@pytest.mark.slow
@pytest.mark.parametrize("forced", ["no", "bf16"])
def test_precision_sensitive_checks_pass_with_auto_as(forced, tmp_path):
    env = {**os.environ, AUTO_ENV: forced, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SENSITIVE],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
