"""Team-scale tracking: `compress train` and `compress tune` against a real MLflow server on PostgreSQL,
and an Optuna study in PostgreSQL shared by two workers; everything read back through the clients."""

from __future__ import annotations

import json

import pytest

from modcompress.cli import compress_main as main

pytestmark = pytest.mark.integration

COMMON = ["optim.epochs=1", "optim.mixed_precision=no", "max_length=32", "optim.batch_size=16",
          "data.max_train_samples=200"]


@pytest.fixture(autouse=True)
def _bounded_http(monkeypatch):
    # a dead server must fail a test in seconds, not after MLflow's default minutes of retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def test_train_logs_params_metrics_and_artifact_to_the_server(mlflow_server, tmp_path, tiny_bert_dir, jigsaw_csv,
                                                               capsys):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "teacher"
    code = main(["train", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--out", str(out),
                 "--tracking-uri", mlflow_server.url, "--json", "optim.lr=5e-3", "tracking.experiment=it-train",
                 *COMMON])
    assert code == 0
    result = json.loads(capsys.readouterr().out)

    client = MlflowClient(mlflow_server.url)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "it-train"
    assert run.data.params["optim.lr"] == "0.005" and run.data.params["model"] == str(tiny_bert_dir)
    assert run.data.tags["stage"] == "train"
    assert run.data.metrics["macro_roc_auc"] == pytest.approx(result["macro_roc_auc"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "artifact")}
    assert {"artifact/artifact.json", "artifact/model", "artifact/tokenizer"} <= paths
    local = client.download_artifacts(run.info.run_id, "artifact/artifact.json", str(tmp_path / "dl"))
    logged = json.loads(open(local).read())
    assert logged["kind"] == "teacher" and logged["labels"] == json.loads((out / "artifact.json").read_text())["labels"]


def test_two_workers_share_one_study_in_postgres(mlflow_server, postgres, tmp_path, tiny_bert_dir, jigsaw_csv,
                                                 capsys):
    import optuna
    from mlflow.tracking import MlflowClient

    storage = postgres.create_database("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    for worker in ("a", "b"):  # two workers: own trial folders, one study
        code = main(["tune", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--space", str(space),
                     "--storage", storage, "--study-name", "shared", "--n-trials", "1", "--pruner", "none",
                     "--out", str(tmp_path / "best"), "--trials-dir", str(tmp_path / f"trials-{worker}"),
                     "--tracking-uri", mlflow_server.url, "--json", "tracking.experiment=it-tune", *COMMON])
        assert code == 0
        capsys.readouterr()
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    summary = json.loads((tmp_path / "best" / "tune.json").read_text())
    assert summary["best"]["trial"] == study.best_trial.number and len(summary["trials"]) == 2
    assert "modcompress@" in summary["storage"] or "postgresql://" in summary["storage"]

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("it-tune")
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id for r in runs if r.data.tags.get("stage") == "tune"}
    trials = [r for r in runs if r.data.tags.get("optuna.study") == "shared" and "optuna.trial" in r.data.tags]
    assert len(parents) == 2 and sorted(r.data.tags["optuna.trial"] for r in trials) == ["0", "1"]
    assert all(r.data.tags["mlflow.parentRunId"] in parents for r in trials)
    assert all("macro_roc_auc" in r.data.metrics for r in trials)
