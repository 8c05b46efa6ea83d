"""Student and baseline registry: every entry trains, saves, reloads and predicts identically; own
architectures ignore padding and export to ONNX with dynamic axes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from compress.artifact import read_info
from compress.config import OptimConfig
from compress.distill import distill, load_distill_config
from compress.errors import ArtifactError
from compress.models import (
    BASELINES,
    STUDENTS,
    load_model,
)
from compress.models.bilstm import reverse_within_length
from compress.models.textcnn import init_embeddings_from, project_embeddings
from compress.tracking import Tracker
from export.runtime import load
from tests import fixtures
from tests.compress.test_distill import write_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

# Every registered name needs an entry here (test_every_registered_name_is_covered).
STUDENT_CASES = {
    "distilbert": [],
    "textcnn": ["student_params.num_filters=8", "student_params.embed_dim=16"],
    "bilstm": ["student_params.hidden=8", "student_params.attention_dim=8", "student_params.embed_dim=16"],
}
BASELINE_CASES = {
    "tfidf": {"word_max_features": 500, "char_max_features": 500},
    "fasttext": {"dim": 8, "buckets": 4096},
}
OWN = {"textcnn": {"embed_dim": 16, "num_filters": 8}, "bilstm": {"embed_dim": 16, "hidden": 8, "attention_dim": 8}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, jigsaw_csv):
    return write_teacher(tmp_path_factory.mktemp("teacher"), jigsaw_csv, epochs=1)


def test_every_registered_name_is_covered():
    assert set(STUDENTS) == set(STUDENT_CASES), "add the new student to STUDENT_CASES"
    assert set(BASELINES) == set(BASELINE_CASES), "add the new baseline to BASELINE_CASES"
    assert set(OWN) == {n for n in STUDENTS if n != "distilbert"}


TEXTS = ["you idiot i will kill you", "thanks for the references on the talk page", "crap", ""]


@pytest.mark.parametrize("name", sorted(STUDENT_CASES))
def test_student_trains_saves_and_reloads_identically(tmp_path, teacher, name):
    config = load_distill_config(str(teacher), name, None, [
        f"out={tmp_path / name}", f"cache_dir={tmp_path / 'cache'}", "tracking.enabled=false", "optim.max_steps=1",
        "optim.epochs=1", *STUDENT_CASES[name]])
    result = distill(config)
    info = read_info(tmp_path / name, kinds=["student"])
    assert info.architecture == name and info.extra["num_parameters"] == result.num_parameters > 0
    assert len(info.extra["history"]) == 1

    model, tokenizer = load_model(tmp_path / name)
    assert not model.training
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=info.max_length, return_tensors="pt")
    with torch.no_grad():
        def logits(m):
            out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return out.logits if hasattr(out, "logits") else out

        before, after = logits(result.model.eval()), logits(model)
    assert after.shape == (len(TEXTS), 6)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)

    predictor = load(tmp_path / name)
    probs = predictor.predict(TEXTS)
    assert probs.dtype == np.float32 and probs.shape == (len(TEXTS), 6)
    np.testing.assert_allclose(probs, torch.sigmoid(before).numpy(), atol=1e-5)
    assert predictor.labels == info.labels and len(predictor.thresholds) == 6

    if name != "distilbert":
        config_json = json.loads((tmp_path / name / "model" / "config.json").read_text())
        assert config_json["architecture"] == name and config_json["num_labels"] == 6
        assert STUDENTS[name](num_labels=6, **config_json["params"]) is not None
    else:
        assert (tmp_path / name / "model" / "model.safetensors").is_file()  # a plain save_pretrained dir


@pytest.mark.parametrize("name", sorted(BASELINE_CASES))
def test_baseline_trains_saves_and_reloads_identically(tmp_path, name):
    texts, labels = fixtures.synthetic_rows(60, seed=2)
    model = BASELINES[name](num_labels=6, **BASELINE_CASES[name])
    model.fit(texts[:50], labels[:50], texts[50:], labels[50:], list(fixtures.JIGSAW_LABELS),
              optim=OptimConfig(max_steps=1, epochs=1, mixed_precision="no"), tracker=Tracker(),
              workdir=tmp_path / "work")
    before = model.predict_proba(TEXTS)
    model.save(tmp_path / "model")
    config_json = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config_json["architecture"] == name and config_json["num_labels"] == 6
    after = BASELINES[name].load(tmp_path / "model").predict_proba(TEXTS)
    assert after.dtype == np.float32 and after.shape == (len(TEXTS), 6)
    np.testing.assert_array_equal(after, before)
    assert model.num_parameters() > 0


@pytest.mark.parametrize("name", sorted(OWN))
def test_own_students_ignore_padding(name):
    torch.manual_seed(0)
    model = STUDENTS[name](num_labels=3, vocab_size=40, **OWN[name]).eval()
    ids = torch.randint(1, 40, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 1:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        batched = model(ids, mask)
        alone = torch.cat([model(ids[i:i + 1, : int(mask[i].sum())], mask[i:i + 1, : int(mask[i].sum())])
                           for i in range(3)])
        # what sits in padding positions must not matter either
        noisy = model(torch.where(mask == 1, ids, torch.randint(1, 40, ids.shape)), mask)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, noisy, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(OWN))
def test_own_students_export_to_onnx_with_dynamic_axes(tmp_path, name):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = STUDENTS[name](num_labels=3, vocab_size=40, **OWN[name]).eval()
    ids, mask = torch.randint(1, 40, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and LSTM batch notes
        torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids2, mask2 = torch.randint(1, 40, (4, 12)), torch.ones(4, 12, dtype=torch.long)
    mask2[1, 5:] = 0
    mask2[3, 2:] = 0
    got = session.run(None, {"input_ids": ids2.numpy(), "attention_mask": mask2.numpy()})[0]
    with torch.no_grad():
        want = model(ids2, mask2).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_reverse_within_length_is_an_involution():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    lengths = torch.tensor([3, 5])
    rev = reverse_within_length(x, lengths)
    assert rev[0, :, 0].tolist() == [2, 1, 0, 3, 4] and rev[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    torch.testing.assert_close(reverse_within_length(rev, lengths), x)


def test_embeddings_start_from_the_teacher():
    torch.manual_seed(0)
    table = torch.randn(40, 16)
    same = STUDENTS["textcnn"](num_labels=2, vocab_size=40, embed_dim=16, num_filters=4, pad_id=0)
    init_embeddings_from(same, table)
    torch.testing.assert_close(same.embedding.weight[1:], table[1:])
    assert same.embedding.weight[0].abs().sum() == 0  # padding row stays zero
    # a narrower student gets the teacher's top principal directions
    low = project_embeddings(table, 4)
    assert low.shape == (40, 4)
    top = torch.linalg.svdvals(table - table.mean(0))[:4]
    got = torch.linalg.svdvals(low)
    torch.testing.assert_close(got / got[0], top / top[0], atol=1e-4, rtol=0)  # same spectrum, rescaled
    torch.testing.assert_close(low.norm(dim=1).mean(), table.norm(dim=1).mean())


def test_load_model_refuses_baselines_and_unknown_architectures(tmp_path):
    from compress.artifact import ArtifactInfo, write_info

    base = tmp_path / "b"
    base.mkdir()
    write_info(base, ArtifactInfo(kind="baseline", architecture="tfidf", labels=["a"]))
    with pytest.raises(ArtifactError, match="load_baseline"):
        load_model(base)
    odd = tmp_path / "o"
    odd.mkdir()
    write_info(odd, ArtifactInfo(kind="student", architecture="resnet", labels=["a"]))
    with pytest.raises(ArtifactError, match="known: hf, distilbert, textcnn, bilstm, tfidf, fasttext"):
        load_model(odd)
