"""Training loop: learns, saves an artifact that reloads identically, resumes, stops early."""

from pathlib import Path

import numpy as np
import pytest
import torch

from compress import loop as loop_mod
from compress import train as train_mod
from compress.artifact import read_info
from compress.config import TrainConfig, load_config
from compress.errors import UserError
from modcompress.cli import compress_main as main


def _config(tiny_bert_dir, jigsaw_csv, out, *extra):
    return load_config(TrainConfig, None, [
        f"model={tiny_bert_dir}", f"data.data={jigsaw_csv}", f"out={out}", "optim.lr=5e-3", "optim.epochs=5", "optim.patience=5",
        "optim.batch_size=16", "optim.mixed_precision=no", "max_length=32", "tracking.enabled=false", *extra,
    ])


def test_trains_and_writes_a_reloadable_artifact(tmp_path, tiny_bert_dir, jigsaw_csv):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, tmp_path / "teacher"))
    assert result.metrics["macro_roc_auc"] > 0.7  # untrained ~0.5; marker words make labels learnable
    assert result.train_examples_per_s > 0
    info = read_info(tmp_path / "teacher", kinds=["teacher"])
    assert info.labels[:2] == ["toxic", "severe_toxic"] and info.hierarchy == {"severe_toxic": "toxic"}
    assert len(info.thresholds) == 6 and info.recipe["optim"]["lr"] == pytest.approx(5e-3)
    assert info.metrics["macro_roc_auc"] == pytest.approx(result.metrics["macro_roc_auc"])
    assert not loop_mod.checkpoint_dir(tmp_path / "teacher").exists()

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher" / "model").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "teacher" / "tokenizer")
    batch = tok(["you idiot i will kill you", "thanks for the references"], return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = torch.sigmoid(model(**batch).logits).numpy()
    assert probs[0, info.labels.index("insult")] > probs[1, info.labels.index("insult")]

    # per-level validation metrics, and the test split: 10% held out before validation, scored once at the
    # best epoch's validation thresholds; the artifact reproduces its test metrics on those rows
    assert [t["name"] for t in info.metrics["levels"]["tasks"]][-1] == "B: severe_toxic | toxic"
    assert info.metrics["conditional"]["severe_toxic"]["parent"] == "toxic"
    test = info.metrics["test"]
    assert (info.extra["train_rows"], info.extra["val_rows"], info.extra["test_rows"], test["n"]) == (320, 40, 40, 40)
    assert [test["per_label"][n]["threshold"] for n in info.labels] == pytest.approx(info.thresholds)
    from compress.config import DataConfig
    from compress.metrics import multilabel_metrics

    test_set = train_mod.load_splits(DataConfig(data=str(jigsaw_csv))).test
    batch = tok(test_set.texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
    with torch.no_grad():
        probs = torch.sigmoid(model(**batch).logits).numpy()
    from compress.hierarchy_metrics import level_cuts_of

    # the validation thresholds and level cuts, carried to the test split unchanged
    again = multilabel_metrics(test_set.labels, probs, info.labels, np.asarray(info.thresholds), info.schema(),
                               level_cuts_of(info.metrics))
    for key in ("macro_roc_auc", "macro_f1", "level_macro_f1"):
        assert again[key] == pytest.approx(test[key], abs=1e-5), key


def test_bf16_autocast_runs_on_cpu(tmp_path, tiny_bert_dir, jigsaw_csv):
    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, tmp_path / "t", "optim.mixed_precision=bf16",
                                     "optim.epochs=1", "optim.max_steps=3"))
    assert result.mixed_precision == "bf16" and np.isfinite(result.metrics["macro_roc_auc"])


@pytest.mark.parametrize(("fp32_s", "bf16_s", "expected"), [(0.020, 0.030, "no"), (0.030, 0.020, "bf16")])
def test_auto_trains_in_the_precision_measured_faster_and_records_why(tmp_path, tiny_bert_dir, jigsaw_csv,
                                                                      monkeypatch, fp32_s, bf16_s, expected):
    from compress import precision
    from compress.precision_probe import TrainingProbe

    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setenv("MODCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "fast_bf16", lambda: True)
    probed = []

    def fake_measure(probe):
        probed.append(probe.signature())
        return fp32_s, bf16_s

    monkeypatch.setattr(TrainingProbe, "measure", fake_measure)
    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, tmp_path / "t", "optim.mixed_precision=auto",
                                     "optim.epochs=1", "optim.max_steps=2"))
    assert result.mixed_precision == expected and result.precision_choice["how"] == "measured"
    assert result.precision_choice["reason"].startswith(f"auto -> {precision.precision_name(expected)}: bf16 training step")
    (signature,) = probed
    assert signature["batch"][0] == 16 and signature["model"] == "BertForSequenceClassification"
    info = read_info(tmp_path / "t", kinds=["teacher"])
    assert info.extra["mixed_precision"] == expected and info.extra["precision_choice"] == result.precision_choice
    assert (tmp_path / "cache" / "precision.json").is_file()


def test_early_stopping_with_patience(tmp_path, tiny_bert_dir, jigsaw_csv):
    # an lr this small cannot improve the score after the first epoch
    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, tmp_path / "t", "optim.lr=1e-12",
                                     "optim.epochs=6", "optim.patience=2", "optim.warmup_ratio=0"))
    assert result.epochs_run == 3 and result.best_epoch == 1


def test_select_metric_level_macro_f1_picks_the_epoch_with_the_best_level_mean(tmp_path, tiny_bert_dir, jigsaw_csv):
    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, tmp_path / "t", "optim.epochs=3",
                                     "optim.select_metric=level_macro_f1", "data.test_fraction=0"))
    history = read_info(tmp_path / "t").extra["history"]
    levels = [h["level_macro_f1"] for h in history]
    assert result.best_epoch == 1 + int(np.argmax(levels)) and result.epochs_run == 3
    assert result.metrics["level_macro_f1"] == pytest.approx(max(levels))
    assert "test" not in result.metrics and read_info(tmp_path / "t").extra["test_rows"] == 0


def test_selection_score_reads_the_chosen_metric_and_falls_back_to_macro_f1():
    metrics = {"macro_roc_auc": 0.9, "level_macro_f1": 0.4, "macro_f1": 0.6}
    assert loop_mod.selection_score(metrics) == 0.9
    assert loop_mod.selection_score(metrics, "level_macro_f1") == 0.4
    assert loop_mod.selection_score({**metrics, "level_macro_f1": float("nan")}, "level_macro_f1") == 0.6


@pytest.mark.slow
def test_resume_after_crash(tmp_path, tiny_bert_dir, jigsaw_csv, monkeypatch):
    out = tmp_path / "t"
    real_evaluate = loop_mod.evaluate
    calls = {"n": 0}

    def crash_on_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "evaluate", crash_on_second_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.train(_config(tiny_bert_dir, jigsaw_csv, out))
    assert not out.exists() and loop_mod.checkpoint_dir(out).is_dir()

    monkeypatch.setattr(loop_mod, "evaluate", real_evaluate)
    # a resume with other settings is refused rather than silently mixing two recipes
    with pytest.raises(UserError, match="cannot resume"):
        train_mod.train(_config(tiny_bert_dir, jigsaw_csv, out, "resume=true", "optim.lr=1e-3"))
    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, out, "resume=true"))
    history = read_info(out).extra["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and result.epochs_run == 5
    assert not loop_mod.checkpoint_dir(out).exists()
    # nothing left to resume: one line, exit 2
    assert main(["train", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--out", str(out),
                 "--resume", "--no-tracking"]) == 2


def test_mlflow_logs_params_metrics_and_artifact(tmp_path, tiny_bert_dir, jigsaw_csv):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train_mod.train(_config(tiny_bert_dir, jigsaw_csv, tmp_path / "t", "tracking.enabled=true",
                                     f"tracking.tracking_uri={uri}", "optim.epochs=2",
                                     "tracking.experiment=test-exp"))
    run = MlflowClient(uri).get_run(result.mlflow_run_id)
    assert run.data.params["optim.lr"] == "0.005"
    assert run.data.metrics["macro_roc_auc"] == pytest.approx(result.metrics["macro_roc_auc"])
    assert run.data.metrics["test_macro_roc_auc"] == pytest.approx(result.metrics["test"]["macro_roc_auc"])
    assert run.data.metrics["test_level_macro_f1"] == pytest.approx(result.metrics["test"]["level_macro_f1"])
    assert len(MlflowClient(uri).get_metric_history(result.mlflow_run_id, "test_macro_f1")) == 1  # logged once
    history = MlflowClient(uri).get_metric_history(result.mlflow_run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    names = {a.path for a in MlflowClient(uri).list_artifacts(result.mlflow_run_id, "artifact")}
    assert "artifact/artifact.json" in names


@pytest.mark.parametrize("bad, message", [
    (lambda d, c: ["--model", str(d), "--data", "/nonexistent/train.csv"], "not found|does not exist|no such"),
    (lambda d, c: ["--model", str(c.parent), "--data", str(c)], "not a Hugging Face checkpoint"),
    (lambda d, c: ["--model", str(d), "--data", str(c), "optim.lr=-3"], "optim.lr"),
    (lambda d, c: ["--model", str(d), "--data", str(c), "loss.name=nope"], "nope"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, tiny_bert_dir, jigsaw_csv, capsys, bad, message):
    out = tmp_path / "out"
    code = main(["train", *bad(tiny_bert_dir, jigsaw_csv), "--out", str(out), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    import re

    assert re.search(message, err, re.IGNORECASE), err
    assert not out.exists() and not loop_mod.checkpoint_dir(out).exists()


def test_optimizer_is_fused_adamw_with_the_same_update_and_no_decay_on_biases_and_norms():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3))
    reference.load_state_dict(model.state_dict())
    fused = loop_mod.make_optimizer(model, 1e-2, 0.1, torch.device("cpu"))
    plain = torch.optim.AdamW(loop_mod.param_groups(reference, 0.1), lr=1e-2, foreach=False)
    assert fused.defaults["fused"] is True
    assert [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]
    assert len(fused.param_groups[0]["params"]) == 2  # the two Linear weights; biases and norm go undecayed
    x = torch.randn(8, 6)
    for _ in range(3):
        for net, opt in ((model, fused), (reference, plain)):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _crash_after_epochs(monkeypatch, n):
    real = loop_mod.evaluate
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n + 1:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "evaluate", crash)
    return real


def test_resume_takes_the_newest_complete_checkpoint(tmp_path, tiny_bert_dir, jigsaw_csv, monkeypatch):
    import shutil

    out = tmp_path / "t"
    real = _crash_after_epochs(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.train(_config(tiny_bert_dir, jigsaw_csv, out, "optim.epochs=4"))
    ckpt = loop_mod.checkpoint_dir(out)
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-0002"]  # the older one went once this was complete
    # a kill between the rename and the clean-up leaves an older complete one and a half-written newer one
    shutil.copytree(ckpt / "epoch-0002", ckpt / "epoch-0001")
    (ckpt / ".epoch-0003.tmp" / "accelerate").mkdir(parents=True)
    monkeypatch.setattr(loop_mod, "evaluate", real)
    train_mod.train(_config(tiny_bert_dir, jigsaw_csv, out, "optim.epochs=4", "resume=true"))
    assert [h["epoch"] for h in read_info(out).extra["history"]] == [1, 2, 3, 4]


def test_a_checkpoint_is_renamed_only_after_every_process_wrote_into_it(tmp_path):
    """Under a launcher each process writes its own RNG state into the temporary checkpoint; the main process
    must not rename that directory away while another is still writing (a race seen as a dead rank in CI)."""
    ckpt = tmp_path / "t.checkpoint"
    tmp = ckpt / ".epoch-0001.tmp"
    events: list = []

    class Accelerator:  # the main process of two; records what the other processes would be waiting on
        is_main_process = True

        def wait_for_everyone(self) -> None:
            events.append(("barrier", tmp.exists()))

        def save_state(self, path: str) -> None:
            (Path(path)).mkdir(parents=True)
            events.append("save_state")

    state = loop_mod.LoopState(epoch=1, history=[])
    best = loop_mod.BestEpoch(None, {}, np.full(2, 0.5, dtype=np.float32))
    loop_mod._save_checkpoint(ckpt, Accelerator(), state, best, "fingerprint")
    # a barrier while tmp still holds what every process wrote, before the main process renames it
    assert events == [("barrier", False), "save_state", ("barrier", True), ("barrier", False)]
    assert (ckpt / "epoch-0001" / "state.json").is_file() and not tmp.exists()


@pytest.mark.parametrize("damage", ["truncated-state", "no-accelerate", "state-is-a-list"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, tiny_bert_dir, jigsaw_csv, monkeypatch, capsys, damage):
    import shutil

    out = tmp_path / "t"
    _crash_after_epochs(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.train(_config(tiny_bert_dir, jigsaw_csv, out))
    newest = loop_mod.checkpoint_dir(out) / "epoch-0001"
    state = newest / "state.json"
    if damage == "truncated-state":
        state.write_text(state.read_text()[: len(state.read_text()) // 2])
    elif damage == "no-accelerate":
        shutil.rmtree(newest / "accelerate")
    else:
        state.write_text("[1, 2]")
    capsys.readouterr()  # the crashed run's progress bars
    code = main(["train", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--out", str(out), "--resume",
                 "--no-tracking", "optim.lr=5e-3", "optim.epochs=5", "optim.patience=5", "optim.batch_size=16",
                 "optim.mixed_precision=no", "max_length=32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is damaged" in err[0] and "Traceback" not in err[0], err
    assert not out.exists()
