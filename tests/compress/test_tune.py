"""`compress tune`: bad spaces and options, pruning, SQLite resume, the best artifact, MLflow runs."""

from __future__ import annotations

import json
import re
import warnings

import optuna
import pytest

from compress.artifact import read_info
from compress.config import TrainConfig, load_config
from compress.errors import UserError
from compress.search_space import parse_space
from compress.tune import EpochReporter, tune
from compress.tune_config import TuneConfig
from modcompress.cli import compress_main as main

SPACE = """\
optim.lr: {low: 3.0e-3, high: 1.0e-2, log: true}
optim.batch_size: [16, 32]
loss.name: [bce, focal]
loss.params.gamma: {low: 0.5, high: 3.0, when: {loss.name: focal}}
"""


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri():
    """The commands set MLflow's process-wide tracking URI; later tests must not log to this test's store."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    yield
    mlflow.set_tracking_uri(previous)


def _base(tiny_bert_dir, jigsaw_csv, *extra):
    return load_config(TrainConfig, None, [
        f"model={tiny_bert_dir}", f"data.data={jigsaw_csv}", "optim.epochs=1", "optim.mixed_precision=no",
        "max_length=32", "optim.batch_size=16", "data.max_train_samples=200", *extra])


def _argv(tiny_bert_dir, jigsaw_csv, tmp_path, *extra):
    return ["tune", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--out", str(tmp_path / "best"),
            "--storage", f"sqlite:///{tmp_path / 'tune.db'}", "--study-name", "s", "--seed", "0",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "optim.epochs=1", "optim.mixed_precision=no",
            "max_length=32", "data.max_train_samples=200", *extra]


# ------------------------------------------------------------------------------------ space


@pytest.mark.parametrize("text, message", [
    ("optim.lr: {low: 1e-3, high: [", "not valid YAML"),
    ("- just\n- a list\n", "must map config keys"),
    ("optim.lrr: {low: 1.0e-4, high: 1.0e-3}", "optim.lrr: unknown setting"),
    ("optim.lr: {low: 1.0e-3, high: 1.0e-4}", "low must be below high"),
    ("optim.lr: {low: -1.0, high: 1.0e-3}", "optim.lr: must be > 0"),
    ("optim.lr: {low: 0.0, high: 1.0e-3, log: true}", "log range needs low > 0"),
    ("optim.lr: {low: 1.0e-4, hi: 1.0e-3}", "unknown field 'hi'"),
    ("optim.batch_size: []", "non-empty list"),
    ("loss.params.gamma: {low: 0.5, high: 3.0}", "loss bce has no parameter 'gamma'"),
    ("loss.name: [bce, nope]", "unknown loss 'nope'"),
    ("loss.name: [bce, focal]\nloss.params.gamma: {low: 0.5, high: 3.0, when: {loss.name: focall}}",
     "focall' is not one of its choices"),
    ("loss.name: [focal]\nloss.params.gamma: {low: -2.0, high: 3.0, when: {loss.name: focal}}", "gamma"),
    ("out: somewhere", "tune sets this itself"),
    ("optim.epochs: {low: 1.5, high: 3, type: int}", "must be an integer"),
])
def test_bad_space_file_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_bert_dir, jigsaw_csv, capsys,
                                                               text, message):
    space = tmp_path / "space.yaml"
    space.write_text(text + "\n")
    code = main(_argv(tiny_bert_dir, jigsaw_csv, tmp_path, "--space", str(space), "--n-trials", "1"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "best").exists() and not (tmp_path / "tune.db").exists()


@pytest.mark.parametrize("argv, message", [
    (["--space", "/nonexistent/space.yaml"], "not found"),
    (["--n-trials", "-1"], "n_trials: must be >= 0"),
    (["--storage", "nosuchdb://x/y"], "cannot open the Optuna storage"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, tiny_bert_dir, jigsaw_csv, capsys, argv, message):
    code = main(_argv(tiny_bert_dir, jigsaw_csv, tmp_path, *argv))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "best").exists()


def test_student_flags_must_come_together(capsys):
    assert main(["tune", "--student", "textcnn", "--data", "x.csv"]) == 2
    assert "--teacher" in capsys.readouterr().err


def test_show_space_prints_yaml(capsys):
    assert main(["tune", "--show-space"]) == 0
    assert parse_space(capsys.readouterr().out)


# ------------------------------------------------------------------------------------ pruning


class _FakeTrial:
    number = 7

    def __init__(self, prune: bool):
        self.prune = prune
        self.reports: list[tuple[float, int]] = []

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return self.prune


class _FakeTracker:
    active = True
    run_id = "run-1"

    def __init__(self):
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)


def test_epoch_reporter_reports_scores_and_prunes():
    keep = _FakeTrial(prune=False)
    reporter = EpochReporter(keep)
    reporter(_FakeTracker(), {"wall_time_s": 3.0}, None)  # end-of-run metrics: ignored
    reporter(_FakeTracker(), {"epoch": 1, "macro_roc_auc": 0.7, "macro_f1": 0.4}, 1)
    reporter(_FakeTracker(), {"epoch": 2, "macro_roc_auc": float("nan"), "macro_f1": 0.5}, 2)  # AUC-less: F1
    assert keep.reports == [(0.7, 1), (0.5, 2)] and reporter.run_id == "run-1"

    levels = _FakeTrial(prune=False)
    reporter = EpochReporter(levels, "level_macro_f1")
    reporter(_FakeTracker(), {"epoch": 1, "macro_roc_auc": 0.9, "level_macro_f1": 0.3, "macro_f1": 0.4}, 1)
    reporter(_FakeTracker(), {"epoch": 2, "macro_roc_auc": 0.9, "macro_f1": 0.4}, 2)  # no level metric: ignored
    assert levels.reports == [(0.3, 1)]

    tracker = _FakeTracker()
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        EpochReporter(_FakeTrial(prune=True))(tracker, {"macro_roc_auc": 0.5}, 1)
    assert tracker.tags == {"optuna.state": "PRUNED"}


def test_median_pruner_stops_a_trial_below_the_median(tmp_path, tiny_bert_dir, jigsaw_csv):
    """Forced case: a finished trial scored 0.99 after every epoch, so a real one (far below) is pruned
    after its first epoch and leaves no files; the best trial has no artifact here, so it is retrained."""
    from optuna.distributions import FloatDistribution

    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    study = optuna.create_study(storage=storage, study_name="p", direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"optim.lr": 5e-3}, distributions={"optim.lr": FloatDistribution(1e-4, 1e-2, log=True)},
        value=0.99, intermediate_values={1: 0.99, 2: 0.99}))
    config = TuneConfig(
        base=_base(tiny_bert_dir, jigsaw_csv, "optim.epochs=2", "tracking.enabled=false"),
        space=parse_space("optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}"),
        out=str(tmp_path / "best"), storage=storage, study_name="p", n_trials=1, pruner="median",
        pruner_startup_trials=1, seed=0)
    result = tune(config)
    assert [(t["number"], t["state"]) for t in result.trials] == [(0, "COMPLETE"), (1, "PRUNED")]
    assert result.trials[1]["epochs"] == 1 and result.ran == [1]
    assert not (tmp_path / "best.trials").exists()
    # trial 0 ran elsewhere (its artifact is not here): retrained from its parameters
    assert result.best_trial == 0 and result.retrained
    info = read_info(tmp_path / "best")
    assert info.recipe["optim"]["lr"] == pytest.approx(5e-3) and info.extra["tune"]["retrained"] is True


# ------------------------------------------------------------------------------------ end to end


def test_tune_resumes_from_sqlite_and_writes_the_best_artifact(tmp_path, tiny_bert_dir, jigsaw_csv, capsys):
    from mlflow.tracking import MlflowClient

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    argv = _argv(tiny_bert_dir, jigsaw_csv, tmp_path, "--space", str(space), "--pruner", "none")
    assert main([*argv, "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^trial\s+state\s+macro_roc_auc", out, re.MULTILINE), out
    assert "2 complete" in out

    # a second call (another worker, or later) adds to the same study
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*argv, "--n-trials", "1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["counts"] == {"COMPLETE": 3} and payload["ran"] == [2]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert len(study.trials) == 3 and payload["best_trial"] == study.best_trial.number

    best = tmp_path / "best"
    info = read_info(best, kinds=["teacher"])
    params = study.best_trial.params
    assert info.recipe["optim"]["lr"] == pytest.approx(params["optim.lr"])
    assert info.recipe["optim"]["batch_size"] == params["optim.batch_size"]
    assert info.recipe["loss"]["name"] == params["loss.name"]
    if params["loss.name"] == "focal":
        assert info.recipe["loss"]["params"]["gamma"] == pytest.approx(params["loss.params.gamma"])
    assert info.extra["tune"]["trial"] == study.best_trial.number
    assert info.metrics["macro_roc_auc"] == pytest.approx(study.best_value)
    summary = json.loads((best / "tune.json").read_text())
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2] and summary["best"]["trial"] == study.best_trial.number
    assert not (tmp_path / "best.trials").exists()  # trial artifacts are removed once the best is copied

    # every trial is an MLflow run nested under its worker's tuning run
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("modcompress").experiment_id])
    parents = {r.info.run_id for r in runs if r.data.tags.get("stage") == "tune"}
    trials = [r for r in runs if "optuna.trial" in r.data.tags]
    assert len(parents) == 2 and len(trials) == 3
    assert all(r.data.tags["mlflow.parentRunId"] in parents for r in trials)
    assert {r.data.tags["optuna.trial"] for r in trials} == {"0", "1", "2"}
    assert all(r.data.params["optim.lr"] for r in trials)

    # --n-trials 0 only (re)writes the study's best artifact: no training, the same trial
    assert main([*argv, "--n-trials", "0", "--no-tracking"]) == 0
    assert read_info(best).extra["tune"]["trial"] == study.best_trial.number
    assert "this call ran 0" in capsys.readouterr().out


def test_a_study_tunes_one_thing(tmp_path, tiny_bert_dir, jigsaw_csv):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    optuna.create_study(storage=storage, study_name="x", direction="maximize").set_user_attr(
        "modcompress.target", "student:textcnn")
    config = TuneConfig(base=_base(tiny_bert_dir, jigsaw_csv, "tracking.enabled=false"),
                                 space=parse_space(SPACE), out=str(tmp_path / "b"), storage=storage,
                                 study_name="x", n_trials=1)
    with pytest.raises(UserError, match="tunes a student:textcnn, not a teacher"):
        tune(config)
    # nor two metrics: trial values must be comparable
    optuna.create_study(storage=storage, study_name="y", direction="maximize").set_user_attr(
        "modcompress.metric", "level_macro_f1")
    config = TuneConfig(base=_base(tiny_bert_dir, jigsaw_csv, "tracking.enabled=false"), space=parse_space(SPACE),
                        out=str(tmp_path / "b"), storage=storage, study_name="y", n_trials=1)
    with pytest.raises(UserError, match="maximises level_macro_f1, not macro_roc_auc; pass optim.select_metric="):
        tune(config)


def test_tune_maximises_the_select_metric(tmp_path, tiny_bert_dir, jigsaw_csv, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {low: 3.0e-3, high: 1.0e-2, log: true}\n")
    assert main(_argv(tiny_bert_dir, jigsaw_csv, tmp_path, "optim.select_metric=level_macro_f1", "--space", str(space),
                      "--pruner", "none", "--no-tracking", "--n-trials", "1")) == 0
    out = capsys.readouterr().out
    assert re.search(r"^trial\s+state\s+level_macro_f1", out, re.MULTILINE), out
    info = read_info(tmp_path / "best")
    summary = json.loads((tmp_path / "best" / "tune.json").read_text())
    assert summary["metric"] == info.extra["tune"]["metric"] == "level_macro_f1"
    assert summary["best"]["value"] == pytest.approx(info.metrics["level_macro_f1"])
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert study.user_attrs["modcompress.metric"] == "level_macro_f1"


def test_tune_a_distilled_student(tmp_path, tiny_bert_dir, jigsaw_csv):
    from compress.train import train

    teacher = tmp_path / "teacher"
    train(_base(tiny_bert_dir, jigsaw_csv, f"out={teacher}", "tracking.enabled=false", "optim.lr=5e-3"))
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\ntemperature: {low: 1.0, high: 4.0}\n"
                     "alpha: {low: 0.3, high: 1.0}\nstudent_params.dropout: {low: 0.1, high: 0.5}\n")
    code = main(["tune", "--student", "textcnn", "--teacher", str(teacher), "--space", str(space),
                 "--out", str(tmp_path / "student"), "--storage", f"sqlite:///{tmp_path / 'tune.db'}",
                 "--n-trials", "2", "--seed", "0", "--no-tracking", "optim.epochs=1", "optim.mixed_precision=no",
                 f"cache_dir={tmp_path / 'cache'}", "student_params={embed_dim: 32, num_filters: 16}"])
    assert code == 0
    info = read_info(tmp_path / "student", kinds=["student"])
    tuned = info.extra["tune"]["params"]
    assert info.architecture == "textcnn" and info.recipe["temperature"] == pytest.approx(tuned["temperature"])
    assert info.recipe["alpha"] == pytest.approx(tuned["alpha"])
