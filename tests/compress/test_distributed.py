"""Training under a launcher: two CPU processes (torchrun, gloo) write one artifact and one MLflow run,
match a single-process run with the same global batch, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compress import loop as loop_mod
from compress import train as train_mod
from compress.artifact import read_info
from compress.config import TrainConfig, load_config
from compress.distill import distill, load_distill_config

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# dropout 0: each process draws dropout masks for its own rows, so with dropout the runs differ by chance
RECIPE = ["optim.lr=5e-3", "optim.patience=5", "optim.batch_size=16", "optim.mixed_precision=no", "max_length=32",
          "dropout=0"]
STUDENT = ["optim.epochs=2", "optim.batch_size=16", "optim.mixed_precision=no", "student_params.num_filters=8",
           "student_params.dropout=0"]
# measured: macro ROC-AUC of the two runs differ by < 0.001 (float sums in another order)
TOLERANCE = 0.02

launched = pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed beside this Python")


def test_each_process_takes_its_slice_of_every_global_batch():
    lengths = np.random.default_rng(0).integers(1, 40, size=101)
    whole = loop_mod.epoch_batches(lengths, 16, seed=3, rank=0, world=1)
    shares = [loop_mod.epoch_batches(lengths, 16, seed=3, rank=r, world=2) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(whole)  # 101 = 6 * 16 + 5: no batch smaller than 2
    for batch, first, second in zip(whole, *shares, strict=True):
        assert sorted(np.concatenate([first, second]).tolist()) == sorted(batch.tolist())
    # a last batch of one row cannot be split: left out on every process, still the same count
    short = loop_mod.epoch_batches(np.ones(17, dtype=np.int64), 16, seed=0, rank=1, world=2)
    assert len(short) == 1 and len(short[0]) == 8


def _launch(tmp_path: Path, *args: str) -> subprocess.Popen:
    """``torchrun --nproc_per_node 2 -m compress ARGS`` in its own process group, MLflow in tmp_path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "compress", *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> str:
    """SIGKILL the launcher's workers (torchrun starts each in its own session), then the launcher; its stderr."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == proc.pid:  # the parent pid
            os.kill(int(stat.parent.name), signal.SIGKILL)
    proc.kill()
    return proc.communicate()[1]


def _finish(proc: subprocess.Popen) -> dict:
    """The one JSON result the launched command printed (it must exit 0)."""
    stdout, stderr = proc.communicate(timeout=300)
    # the failing worker's own lines (prefixed [rankN]) may be far from the end, behind torchrun's summary
    worker = "\n".join(line for line in stderr.splitlines() if line.startswith("[rank") and "rank0" not in line)
    assert proc.returncode == 0, (worker[-3000:] + "\n---\n" + stderr[-3000:]) if worker else stderr[-3000:]
    return json.loads(stdout)  # one object: a second process printing too would make this fail


def _mlflow_runs(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        return db.execute("SELECT name, status FROM runs").fetchall()


def _leftovers(out: Path) -> list[str]:
    """What besides ``out`` (and the launcher's MLflow store) an atomic write left beside it."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.slow
@launched
def test_train_on_two_processes_matches_one_and_resumes_after_a_kill(tmp_path, tiny_bert_dir, jigsaw_csv):
    single = train_mod.train(load_config(TrainConfig, None, [
        f"model={tiny_bert_dir}", f"data.data={jigsaw_csv}", f"out={tmp_path / 'single'}", "optim.epochs=4",
        "tracking.enabled=false", *RECIPE]))

    out = tmp_path / "teacher"
    args = ["train", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--out", str(out), "--json",
            "optim.epochs=4", *RECIPE]
    killed = _launch(tmp_path, *args)
    ckpt = loop_mod.checkpoint_dir(out)
    while not list(ckpt.glob("epoch-*")) and killed.poll() is None:
        time.sleep(0.05)
    stderr = _kill(killed)
    time.sleep(1)  # a worker that outlived the kill would write on: let it show
    assert list(ckpt.glob("epoch-*")) and not out.exists(), f"the run was not killed mid-way: {stderr[-3000:]}"

    result = _finish(_launch(tmp_path, *args, "--resume"))
    info = read_info(out, kinds=["teacher"])
    assert [h["epoch"] for h in info.extra["history"]] == [1, 2, 3, 4]
    assert result["epochs_run"] == 4 and not loop_mod.checkpoint_dir(out).exists() and _leftovers(out) == []
    # one MLflow run per launch: the killed one (never ended) and the finished one
    assert sorted(status for _, status in _mlflow_runs(tmp_path)) == ["FINISHED", "RUNNING"]
    assert result["mlflow_run_id"]
    assert abs(result["macro_roc_auc"] - single.metrics["macro_roc_auc"]) < TOLERANCE
    assert abs(info.metrics["macro_f1"] - single.metrics["macro_f1"]) < TOLERANCE


@pytest.mark.slow
@launched
def test_distill_on_two_processes_runs_the_teacher_once(tmp_path, tiny_bert_dir, jigsaw_csv):
    teacher = tmp_path / "teacher"
    train_mod.train(load_config(TrainConfig, None, [
        f"model={tiny_bert_dir}", f"data.data={jigsaw_csv}", f"out={teacher}", "optim.epochs=1",
        "tracking.enabled=false", *RECIPE]))
    single = distill(load_distill_config(str(teacher), "textcnn", None, [
        f"out={tmp_path / 'single'}", f"cache_dir={tmp_path / 'single-cache'}", "tracking.enabled=false", *STUDENT]))

    out = tmp_path / "student"
    cache = tmp_path / "soft-labels"
    result = _finish(_launch(tmp_path, "distill", str(teacher), "textcnn", "--out", str(out),
                             "--cache-dir", str(cache), "--json", *STUDENT))
    assert read_info(out, kinds=["student"]).extra["history"][-1]["epoch"] == 2 and _leftovers(out) == []
    assert [p.name for p in cache.iterdir()] == [f"{single.cache_key}.npy"]  # written once, by the main process
    assert [status for _, status in _mlflow_runs(tmp_path)] == ["FINISHED"] and result["mlflow_run_id"]
    assert abs(result["macro_roc_auc"] - single.metrics["macro_roc_auc"]) < TOLERANCE


@pytest.mark.slow
@launched
def test_fasttext_baseline_on_two_processes_writes_once(tmp_path, jigsaw_csv):
    out = tmp_path / "fasttext"
    result = _finish(_launch(tmp_path, "baseline", "fasttext", "--data", str(jigsaw_csv), "--out", str(out), "--json",
                             "optim.epochs=2", "optim.batch_size=16"))
    assert read_info(out, kinds=["baseline"]).architecture == "fasttext" and _leftovers(out) == []
    assert result["artifact"] == str(out) and not loop_mod.checkpoint_dir(out).exists()
    assert [status for _, status in _mlflow_runs(tmp_path)] == ["FINISHED"] and result["mlflow_run_id"]
