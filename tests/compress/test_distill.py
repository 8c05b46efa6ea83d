"""Distillation: KD objective, soft-label cache, transfer set, DistilBERT init, bad input, report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from compress import distill as distill_mod
from compress.artifact import ArtifactInfo, read_info, write_info
from compress.config import DataConfig, to_dict
from compress.distill import (
    DistillConfig,
    build_transfer_set,
    distill,
    load_distill_config,
    masked_distillation_loss,
    teacher_decisions,
)
from compress.errors import ConfigError
from compress.losses import BCELoss, DistillationLoss
from modcompress.cli import compress_main as main
from tests import fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


def write_teacher(root: Path, csv: Path, layers: int = 2, epochs: int = 5, seed: int = 0) -> Path:
    """A tiny BERT trained briefly with a plain loop, written as a teacher artifact (recipe.data = ``csv``).

    Faster than ``compress.train.train`` (no checkpoints, no Accelerate) and good enough to teach.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    from compress.batching import encode, iterate
    from compress.metrics import multilabel_metrics, tune_thresholds
    from compress.predict import predict_logits, sigmoid
    from compress.train import load_splits

    ckpt = fixtures.write_tiny_bert(root / "ckpt", layers=layers, seed=seed)
    tok = AutoTokenizer.from_pretrained(ckpt)
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(ckpt)
    train, val, _ = load_splits(DataConfig(data=str(csv)))  # the split it records: 10% test, 10% validation
    enc = encode(tok, train.texts, 32, train.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(epochs):
        for batch in iterate(enc, 16, shuffle=True, seed=epoch):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    probs = sigmoid(predict_logits(model, encode(tok, val.texts, 32)))
    thresholds = tune_thresholds(val.labels, probs)
    metrics = multilabel_metrics(val.labels, probs, train.schema.names, thresholds)
    out = root / "teacher"
    out.mkdir()
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "tokenizer")
    write_info(out, ArtifactInfo(
        kind="teacher", architecture="hf", labels=list(train.schema.names),
        hierarchy={c: p for c, p in train.schema.hierarchy}, thresholds=thresholds.tolist(), max_length=32,
        metrics=metrics, recipe={"data": to_dict(DataConfig(data=str(csv))), "max_length": 32}))
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, jigsaw_csv):
    return write_teacher(tmp_path_factory.mktemp("teacher"), jigsaw_csv)


def _config(teacher, student, out, cache, *extra) -> DistillConfig:
    return load_distill_config(str(teacher), student, None, [
        f"out={out}", f"cache_dir={cache}", "tracking.enabled=false", "optim.mixed_precision=no", *extra])


SMALL_CNN = ["student_params.num_filters=16", "student_params.embed_dim=32"]


# ---------------------------------------------------------------------------------------------- objective


def test_masked_distillation_loss_matches_per_row_reference():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4) * 3, torch.randn(6, 4) * 3
    y = (torch.rand(6, 4) > 0.5).float()
    has = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    temp, alpha = 2.5, 0.3
    got = masked_distillation_loss(s, t, y, has, DistillationLoss(BCELoss(), temp, alpha))

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    kd_rows = bce(s / temp, torch.sigmoid(t / temp), reduction="none").mean(1) * temp**2  # (B,)
    hard_rows = bce(s, y, reduction="none").mean(1)
    want = (alpha * kd_rows + (1 - alpha) * has.float() * hard_rows).mean()
    assert torch.allclose(got, want, atol=1e-6)
    # all labelled: exactly DistillationLoss; none labelled: alpha * KD
    full = masked_distillation_loss(s, t, y, torch.ones(6, dtype=torch.bool), DistillationLoss(BCELoss(), temp, alpha))
    assert torch.allclose(full, DistillationLoss(BCELoss(), temp, alpha)(s, t, y), atol=1e-6)
    none = masked_distillation_loss(s, t, y, torch.zeros(6, dtype=torch.bool), DistillationLoss(BCELoss(), temp, 1.0))
    assert torch.allclose(none, kd_rows.mean(), atol=1e-6)


def test_transfer_set_counts_and_augmentation():
    texts, labels = fixtures.synthetic_rows(20, seed=1)
    ts = build_transfer_set(texts, labels, ["an extra unlabeled text", "another one here"], augment=3, p_mask=0.5,
                            p_ng=0.5, mask_token="[MASK]", seed=0)
    assert ts.counts == {"labelled": 20, "unlabeled": 2, "augmented": 66, "total": 88}
    assert ts.has_labels.sum() == 20 and ts.has_labels[:20].all()
    assert (ts.labels[:20] == labels).all() and (ts.labels[20:] == 0).all()
    aug = ts.texts[22:]
    assert sum("[MASK]" in t for t in aug) > 20  # p_mask = 0.5 over ~10-word texts
    assert sum(len(t.split()) <= 5 for t in aug) > 10  # n-gram samples
    again = build_transfer_set(texts, labels, ["an extra unlabeled text", "another one here"], augment=3,
                               p_mask=0.5, p_ng=0.5, mask_token="[MASK]", seed=0)
    assert again.fingerprint() == ts.fingerprint()  # seeded: the soft-label cache key is stable


def test_a_student_takes_its_teachers_split_and_an_old_teacher_keeps_the_one_it_had(tmp_path):
    def teacher_recording(data: dict) -> str:
        directory = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        directory.mkdir()
        write_info(directory, ArtifactInfo(kind="teacher", architecture="hf", labels=["a"], recipe={"data": data}))
        return str(directory)

    # made before the test split existed: it held no test rows out, so the student holds none either
    old = load_distill_config(teacher_recording({"data": "d.csv", "val_fraction": 0.2, "seed": 3}), "textcnn")
    assert (old.data.test_fraction, old.data.val_fraction, old.data.seed) == (0.0, 0.2, 3)
    new = load_distill_config(teacher_recording(to_dict(DataConfig(data="d.csv", test_fraction=0.15,
                                                                   test_data="t.csv"))), "textcnn")
    assert (new.data.test_fraction, new.data.test_data) == (0.15, "t.csv")
    # data of the student's own: the defaults (a 10% test split)
    own = load_distill_config(teacher_recording({"data": "d.csv"}), "textcnn", overrides=["data.data=e.csv"])
    assert own.data == DataConfig(data="e.csv")


def test_unlabeled_texts_drop_validation_and_test_texts(tmp_path, caplog):
    path = tmp_path / "u.txt"
    path.write_text("keep me\nval text\ntest text\nkeep me too\n")
    caplog.set_level("INFO", logger="compress.distill")
    assert distill_mod.unlabeled_transfer_texts(path, None, ["val text", "test text"]) == ["keep me", "keep me too"]
    assert "dropped 2 unlabeled texts that are validation or test texts" in caplog.text


def test_unlabeled_table_text_column_is_found_like_a_data_files(tmp_path):
    # the cyberbullying corpus in ../shared/data names its column tweet_text
    path = tmp_path / "u.csv"
    path.write_text("tweet_text,cyberbullying_type\nfirst tweet,age\nsecond tweet,religion\n")
    assert distill_mod.read_unlabeled(path) == ["first tweet", "second tweet"]
    both = tmp_path / "both.csv"
    both.write_text("text,comment_text\na,b\n")  # the data loader's order: comment_text first
    assert distill_mod.read_unlabeled(both) == ["b"]


# ---------------------------------------------------------------------------------------------- recipe


@pytest.mark.slow
def test_textcnn_learns_from_teacher_and_cache_is_reused(tmp_path, teacher, monkeypatch, caplog):
    from transformers import BertForSequenceClassification

    calls = {"n": 0}
    real_forward = BertForSequenceClassification.forward

    def counting_forward(self, *args, **kwargs):
        calls["n"] += 1
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", counting_forward)
    cache = tmp_path / "cache"
    first = distill(_config(teacher, "textcnn", tmp_path / "s1", cache, "optim.epochs=6", "optim.lr=1e-2",
                            "optim.batch_size=16", "alpha=0.7", *SMALL_CNN))
    assert calls["n"] > 0 and not first.cache_hit
    assert len(list(cache.glob("*.npy"))) == 1
    teacher_auc = read_info(teacher).metrics["macro_roc_auc"]
    assert teacher_auc > 0.75
    assert first.metrics["macro_roc_auc"] > 0.75, first.metrics["macro_roc_auc"]

    # the cached logits are the teacher's logits over the transfer set
    from compress.batching import encode
    from compress.models import load_model
    from compress.predict import predict_logits

    t_model, t_tok = load_model(teacher)
    cached = np.load(next(cache.glob("*.npy")))
    n_train = first.transfer["labelled"]
    assert cached.shape == (n_train, 6)
    from compress.config import build_config, recorded_data_values
    from compress.train import load_splits

    train = load_splits(build_config(DataConfig, recorded_data_values(read_info(teacher).recipe["data"]))).train
    expected = predict_logits(t_model, encode(t_tok, train.texts, 32))
    np.testing.assert_allclose(cached, expected, atol=1e-5)

    calls["n"] = 0
    caplog.set_level("INFO", logger="compress.distill")
    second = distill(_config(teacher, "textcnn", tmp_path / "s2", cache, "optim.max_steps=2", *SMALL_CNN))
    assert second.cache_hit and calls["n"] == 0  # the teacher never ran
    assert "reusing cached soft labels" in caplog.text
    assert second.cache_key == first.cache_key

    info = read_info(tmp_path / "s1", kinds=["student"])
    assert info.architecture == "textcnn" and info.parent == str(Path(teacher).resolve())
    assert info.recipe["temperature"] == 2.0 and info.recipe["alpha"] == 0.7 and info.recipe["loss"]["name"] == "bce"
    assert info.extra["num_parameters"] == first.num_parameters and info.extra["soft_label_cache_key"] == first.cache_key
    config = json.loads((tmp_path / "s1" / "model" / "config.json").read_text())
    assert config["architecture"] == "textcnn" and config["num_labels"] == 6
    assert config["params"]["num_filters"] == 16 and config["params"]["vocab_size"] == len(fixtures.vocabulary())
    assert (tmp_path / "s1" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "s1" / "tokenizer" / "vocab.txt").is_file()
    assert not (tmp_path / "s1.checkpoint").exists()


def test_unlabeled_and_augmented_rows_are_counted(tmp_path, teacher, jigsaw_csv):
    unl_txt = tmp_path / "unlabeled.txt"
    extra, _ = fixtures.synthetic_rows(30, seed=7)
    unl_txt.write_text("\n".join(extra) + "\n\n")
    cfg = _config(teacher, "textcnn", tmp_path / "s", tmp_path / "cache", f"unlabeled={unl_txt}", "augment=2",
                  "optim.max_steps=1", *SMALL_CNN)
    result = distill(cfg)
    n_l = result.transfer["labelled"]
    assert n_l == 320  # 400 rows, 10% validation and 10% test held out (the teacher's split)
    assert result.transfer == {"labelled": 320, "unlabeled": 30, "augmented": 2 * 350, "total": 3 * 350}
    info = read_info(tmp_path / "s")
    assert info.extra["transfer"] == result.transfer
    assert (info.extra["val_rows"], info.extra["test_rows"], info.metrics["test"]["n"]) == (40, 40, 40)

    # a CSV column works too; validation and test texts are never used for transfer
    from compress.train import load_splits

    _, val, test = load_splits(DataConfig(data=str(jigsaw_csv)))
    unl_csv = tmp_path / "unlabeled.csv"
    rows = [*extra[:5], val.texts[0], test.texts[0]]
    unl_csv.write_text("id,comment_text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(rows)))
    texts = distill_mod.read_unlabeled(unl_csv)
    assert len(texts) == 7
    cfg = _config(teacher, "textcnn", tmp_path / "s2", tmp_path / "cache", f"unlabeled={unl_csv}",
                  "optim.max_steps=1", *SMALL_CNN)
    assert distill(cfg).transfer["unlabeled"] == 5

    # alpha=0 (hard labels only): rows without labels carry no loss and are left out
    cfg = _config(teacher, "textcnn", tmp_path / "s3", tmp_path / "cache", f"unlabeled={unl_txt}", "augment=2",
                  "alpha=0", "optim.max_steps=1", *SMALL_CNN)
    assert distill(cfg).transfer == {"labelled": 320, "unlabeled": 0, "augmented": 0, "total": 320}


def test_auto_precision_is_measured_on_the_kd_step_and_recorded(tmp_path, teacher, monkeypatch):
    from compress import precision

    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setenv("MODCOMPRESS_CACHE_DIR", str(tmp_path / "pcache"))
    monkeypatch.setattr(precision, "fast_bf16", lambda: True)
    result = distill(_config(teacher, "textcnn", tmp_path / "s", tmp_path / "cache", "optim.mixed_precision=auto",
                             "optim.max_steps=1", "optim.epochs=1", *SMALL_CNN))
    choice = result.precision_choice
    # the probe really ran the student's KD step (soft labels picked by batch index), in both precisions
    assert choice["how"] == "measured" and choice["fp32_ms"] > 0 and choice["bf16_ms"] > 0
    assert result.mixed_precision == choice["precision"] and choice["key"]["model"] == "TextCNN"
    assert read_info(tmp_path / "s").extra["precision_choice"] == choice
    entries = json.loads((tmp_path / "pcache" / "precision.json").read_text())["entries"]
    assert [e["task"] for e in entries.values()] == ["training"]


def test_distilbert_copies_every_other_teacher_layer(tmp_path):
    from transformers import BertForSequenceClassification

    from compress.models import STUDENTS

    t_model = BertForSequenceClassification.from_pretrained(fixtures.write_tiny_bert(tmp_path / "t4", layers=4))
    student = STUDENTS["distilbert"](t_model)  # 4 layers -> 2: teacher layers 0 and 2
    assert student.config.num_hidden_layers == 2 and type(student) is type(t_model)
    t_state, s_state = t_model.state_dict(), student.state_dict()
    for key, value in s_state.items():
        if ".encoder.layer." in key:
            i, rest = key.split(".encoder.layer.")[1].split(".", 1)
            source = f"bert.encoder.layer.{[0, 2][int(i)]}.{rest}"
        else:
            source = key
        assert torch.equal(value, t_state[source]), key
    assert torch.equal(student.bert.encoder.layer[1].attention.self.query.weight,
                       t_model.bert.encoder.layer[2].attention.self.query.weight)
    assert not torch.equal(student.bert.encoder.layer[1].attention.self.query.weight,
                           t_model.bert.encoder.layer[1].attention.self.query.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, t_model.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, t_model.classifier.weight)
    assert torch.equal(student.bert.pooler.dense.weight, t_model.bert.pooler.dense.weight)
    assert STUDENTS["distilbert"](t_model, 3).config.num_hidden_layers == 3
    with pytest.raises(ValueError, match="student_layers"):
        STUDENTS["distilbert"](t_model, 5)


def test_distilbert_with_hidden_state_matching_runs_the_teacher_per_step(tmp_path, teacher, monkeypatch):
    from transformers import BertForSequenceClassification

    seen = []
    real_forward = BertForSequenceClassification.forward

    def spy(self, *args, **kwargs):
        seen.append((self.config.num_hidden_layers, bool(kwargs.get("output_hidden_states")), self.training))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", spy)
    result = distill(_config(teacher, "distilbert", tmp_path / "s", tmp_path / "cache", "hidden_weight=1.0",
                             "optim.max_steps=3", "optim.batch_size=32", "freeze_embeddings=true"))
    teacher_steps = [s for s in seen if s[0] == 2 and s[1]]
    assert len(teacher_steps) == 3 and not any(s[2] for s in teacher_steps)  # once per step, in eval mode
    info = read_info(tmp_path / "s")
    assert info.architecture == "distilbert" and info.recipe["student_params"] == {"student_layers": 1,
                                                                                    "teacher_layers": 2}
    assert (tmp_path / "s" / "model" / "config.json").is_file() and np.isfinite(result.metrics["macro_roc_auc"])
    from compress.models import load_model

    t_model, _ = load_model(teacher)
    s_model, _ = load_model(tmp_path / "s")
    # frozen: still the teacher's table; the layers did train
    assert torch.equal(s_model.bert.embeddings.word_embeddings.weight, t_model.bert.embeddings.word_embeddings.weight)
    assert not torch.equal(s_model.bert.encoder.layer[0].output.dense.weight,
                           t_model.bert.encoder.layer[0].output.dense.weight)


def test_hf_checkpoint_as_student(tmp_path, teacher):
    ckpt = fixtures.write_tiny_bert(tmp_path / "other", layers=1, hidden=16, seed=3)
    result = distill(_config(teacher, str(ckpt), tmp_path / "s", tmp_path / "cache", "optim.max_steps=1"))
    info = read_info(tmp_path / "s")
    assert info.architecture == "distilbert" and info.recipe["student_params"] == {"checkpoint": str(ckpt)}
    assert result.num_parameters < 20000


# ---------------------------------------------------------------------------------------------- bad input


def test_teacher_decisions_are_its_probabilities_at_its_thresholds():
    logits = np.array([[0.0, 2.0], [-1.0, 0.5], [3.0, -3.0]], dtype=np.float32)
    # sigmoid: [[.5, .881], [.269, .622], [.953, .047]]
    assert teacher_decisions(logits, [0.6, 0.7]).tolist() == [[0, 1], [0, 0], [1, 0]]
    assert teacher_decisions(logits, [0.5, 0.5]).tolist() == [[1, 1], [0, 1], [1, 0]]
    assert teacher_decisions(logits, []).tolist() == [[1, 1], [0, 1], [1, 0]]  # none recorded: 0.5


def test_thresholds_from_transfer_are_tuned_on_the_teachers_decisions(tmp_path, teacher, monkeypatch):
    import compress.loop as loop_mod
    from compress.batching import encode
    from compress.models import load_model
    from compress.predict import predict_logits
    from compress.train import load_splits

    calls = []
    real = loop_mod.tune_thresholds

    def spy(y, probs):
        calls.append((np.asarray(y).copy(), real(y, probs)))
        return calls[-1][1]

    monkeypatch.setattr(loop_mod, "tune_thresholds", spy)
    cfg = _config(teacher, "textcnn", tmp_path / "s", tmp_path / "cache", "optim.max_steps=6", "optim.epochs=2",
                  "thresholds_from=transfer", *SMALL_CNN)
    distill(cfg)
    info = read_info(tmp_path / "s")
    assert info.extra["thresholds_from"] == "transfer"
    transfer_calls = [c for c in calls if len(c[0]) == 320]  # the 320 labelled training texts = the transfer set
    assert len(transfer_calls) == 1
    targets, tuned = transfer_calls[0]
    np.testing.assert_allclose(info.thresholds, tuned)
    # the targets are the teacher's own decisions over the transfer texts, not the gold labels
    t_model, t_tok = load_model(teacher)
    train, _, _ = load_splits(DataConfig(data=read_info(teacher).recipe["data"]["data"]))
    t_probs = 1 / (1 + np.exp(-predict_logits(t_model, encode(t_tok, train.texts, 32))))
    expected = (t_probs >= np.asarray(read_info(teacher).thresholds)).astype(np.float32)
    assert (targets == expected).mean() > 0.99
    assert (targets != train.labels).any()
    # validation and test metrics are at the final thresholds; validation-tuned ones are kept for comparison
    for metrics in (info.metrics, info.metrics["test"]):
        assert [metrics["per_label"][n]["threshold"] for n in info.labels] == pytest.approx(info.thresholds)
    assert 0.0 <= info.metrics["val_tuned_macro_f1"] <= 1.0
    best = next(h for h in info.extra["history"] if h["epoch"] == info.extra["best_epoch"])
    assert info.metrics["val_tuned_macro_f1"] == pytest.approx(best["macro_f1"])  # the best epoch's, as validated


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig(teacher="t", student="textcnn", temperature=0)
    with pytest.raises(ConfigError, match="alpha"):
        DistillConfig(teacher="t", student="textcnn", alpha=1.5)
    with pytest.raises(ConfigError, match="known: distilbert, textcnn, bilstm"):
        DistillConfig(teacher="t", student="resnet")


def _other_labels_csv(path: Path) -> Path:
    path.write_text("text,spam,ham\n" + "".join(f"text number {i},{i % 2},{(i + 1) % 2}\n" for i in range(40)))
    return path


@pytest.mark.parametrize("case, message", [
    ("not_teacher", "not a modcompress artifact"),
    ("wrong_kind", "student artifact; this command needs one of: teacher"),
    ("unknown_student", "unknown student 'resnet'; known: distilbert, textcnn, bilstm"),
    ("label_mismatch", "missing toxic"),
    ("temperature", "temperature: must be > 0"),
    ("alpha", r"alpha: must be in \[0, 1\]"),
    ("thresholds_from", "thresholds_from: must be one of validation, transfer, got 'teacher'"),
    ("thresholds_from_alpha_0", "thresholds_from: transfer tunes thresholds on the teacher's soft labels"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, teacher, capsys, case, message):
    out, cache = tmp_path / "out", tmp_path / "cache"
    teacher_arg, student, extra = str(teacher), "textcnn", []
    if case == "not_teacher":
        teacher_arg = str(tmp_path)
    elif case == "wrong_kind":
        fake = tmp_path / "student"
        fake.mkdir()
        write_info(fake, ArtifactInfo(kind="student", architecture="textcnn", labels=["a"]))
        teacher_arg = str(fake)
    elif case == "unknown_student":
        student = "resnet"
    elif case == "label_mismatch":
        extra = ["--data", str(_other_labels_csv(tmp_path / "other.csv")), "--text-column", "text",
                 "--label-columns", "spam,ham"]
    elif case == "temperature":
        extra = ["--temperature", "0"]
    elif case == "alpha":
        extra = ["--alpha", "1.5"]
    elif case == "thresholds_from":
        extra = ["--thresholds-from", "teacher"]
    elif case == "thresholds_from_alpha_0":
        extra = ["--thresholds-from", "transfer", "--alpha", "0"]
    code = main(["distill", teacher_arg, student, "--out", str(out), "--cache-dir", str(cache), "--no-tracking",
                 *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists() and not cache.exists() and not (tmp_path / "out.checkpoint").exists()


# ---------------------------------------------------------------------------------------------- report


@pytest.mark.slow
def test_distill_report_table(tmp_path, teacher, capsys):
    distill(_config(teacher, "textcnn", tmp_path / "cnn", tmp_path / "cache", "optim.max_steps=1", *SMALL_CNN))
    code = main(["distill-report", str(teacher), str(tmp_path / "cnn"), "--calls", "5", "--warmup", "1",
                 "--batch-size", "4", "--output", "json", "--save", str(tmp_path / "report"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    teacher_row, cnn_row = report["rows"]
    assert teacher_row["kind"] == "teacher" and teacher_row["f1_vs_teacher"] == pytest.approx(1.0)
    assert teacher_row["parameters"] > cnn_row["parameters"] > 0
    assert cnn_row["macro_roc_auc"] == pytest.approx(read_info(tmp_path / "cnn").metrics["macro_roc_auc"])
    assert cnn_row["latency"]["p50_ms"] > 0 and cnn_row["examples_per_s"] > 0
    assert report["settings"]["validation_texts"] == 40
    table = (tmp_path / "report.md").read_text()
    assert table.startswith("| artifact |") and "| cnn | student | textcnn |" in table
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("modcompress").experiment_id])
    assert run.data.tags["command"] == "compress distill-report" and run.data.params["calls"] == "5"
    assert run.data.metrics["rows/cnn/macro_roc_auc"] == pytest.approx(cnn_row["macro_roc_auc"])

