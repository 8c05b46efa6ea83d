"""Conditional heads: marginal logits, the masked conditional loss and KD against hand-written float64
formulas; the hierarchy holding by construction; teachers and students that train, reload and export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data import OLID_SCHEMA, LabelSchema
from compress.errors import ConfigError
from compress.losses import (
    BCELoss,
    ConditionalLoss,
    DistillationLoss,
    build_conditional_loss,
    conditional_class_weights,
    conditional_kd_loss,
)
from compress.models.conditional import (
    ConditionalLinear,
    LabelTree,
    MarginalLogits,
    conditional_logits,
    head_tree,
    set_head,
)
from compress.models.textcnn import TextCNN
from tests import fixtures

pytestmark = pytest.mark.usefixtures("one_thread")

OLID_TREE = LabelTree.from_schema(OLID_SCHEMA)  # 0 offensive, 1 targeted, (2, 3, 4) one target under 1
# two top-level roots, a group under a child, a plain child beside the group, a grandchild of a group member
DEEP_TREE = LabelTree(9, {1: 0, 2: 1, 3: 1, 4: 1, 5: 1, 7: 6, 8: 2}, ((2, 3, 4),))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def naive_marginals(z: np.ndarray, parents: dict[int, int], groups: list[list[int]]) -> np.ndarray:
    """P(label) in float64 as products of probabilities, nothing from compress."""
    cond = _sigmoid(z)
    for group in groups:
        e = np.exp(z[:, group] - z[:, group].max(axis=1, keepdims=True))
        cond[:, group] = e / e.sum(axis=1, keepdims=True)

    def marginal(j: int) -> np.ndarray:
        return cond[:, j] * (marginal(parents[j]) if j in parents else 1.0)

    return np.stack([marginal(j) for j in range(z.shape[1])], axis=1)


def assert_hierarchy_holds(probs: np.ndarray, tree: LabelTree, rtol: float = 1e-5) -> None:
    """Every child <= its parent; every exclusive group sums to <= its parent (an exhaustive group sums to
    exactly its parent, so ``rtol`` allows for float rounding)."""
    probs = np.asarray(probs, dtype=np.float64)
    for child, parent in tree.parents.items():
        assert (probs[:, child] <= probs[:, parent] * (1 + rtol)).all(), (child, parent)
    for group in tree.groups:
        assert (probs[:, list(group)].sum(axis=1) <= probs[:, tree.parents[group[0]]] * (1 + rtol)).all(), group


# ---------------------------------------------------------------------------------------------- the head


@pytest.mark.parametrize("tree", [OLID_TREE, DEEP_TREE], ids=["olid", "deep"])
def test_marginal_logits_are_exact_against_naive_float64_probabilities(tree):
    torch.manual_seed(0)
    z = torch.randn(64, tree.num_labels) * 3
    marginal = MarginalLogits(tree)(z).double().numpy()
    want = naive_marginals(z.double().numpy(), tree.parents, [list(g) for g in tree.groups])
    np.testing.assert_allclose(_sigmoid(marginal), want, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(marginal, np.log(want) - np.log1p(-want), atol=1e-4, rtol=1e-5)
    # a top-level label outside any group passes through exactly, as in a flat head
    assert torch.equal(MarginalLogits(tree)(z)[:, 0], z[:, 0])
    assert_hierarchy_holds(want, tree, rtol=1e-12)


def test_marginal_logits_stay_finite_and_exact_at_extreme_logits():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.choice([-1e4, -90.0, -20.0, 0.0, 20.0, 90.0, 1e4], size=(400, 9)).astype(np.float32))
    z.requires_grad_(True)
    marginal = MarginalLogits(DEEP_TREE)(z)
    marginal.sum().backward()
    assert torch.isfinite(marginal).all() and torch.isfinite(z.grad).all()
    assert_hierarchy_holds(torch.sigmoid(marginal.detach().double()).numpy(), DEEP_TREE)
    # closed forms: logit(P) = log P - log(1 - P), computed by hand for saturated rows
    big = 1e4
    z = torch.tensor([[big, big, big, -big, 0.0], [-80.0, 90.0, big, big, -big]])
    got = MarginalLogits(OLID_TREE)(z)
    want = torch.tensor([
        # P(off) ~ 1; 1 - P(tin) ~ 2 e^-big; 1 - P(ind) ~ 3 e^-big; P(grp) = e^-2big; P(oth) = e^-big
        [big, big - math.log(2), big - math.log(3), -2 * big, -big],
        # P(off) = e^-80 = P(tin); the two targets at 1e4 share it: P = e^-80 / 2; P(oth) = e^(-80 - 2big) / 2
        [-80.0, -80.0, -80.0 - math.log(2), -80.0 - math.log(2), -80.0 - 2 * big - math.log(2)],
    ])
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-6)


def test_marginal_logits_export_to_onnx_and_stay_stable(tmp_path):
    import onnxruntime as ort

    head = MarginalLogits(DEEP_TREE).eval()
    path = tmp_path / "head.onnx"
    torch.onnx.export(head, (torch.randn(2, 9),), str(path), input_names=["z"], output_names=["m"],
                      dynamic_axes={"z": {0: "batch"}, "m": {0: "batch"}}, opset_version=17, dynamo=False)
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(size=(8, 9)) * 3, rng.choice([-1e4, -80.0, 0.0, 80.0, 1e4], size=(64, 9))])
    z = z.astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    want = head(torch.from_numpy(z)).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-6)


def test_head_keeps_the_state_dict_and_gives_raw_logits_only_inside_the_context():
    torch.manual_seed(0)
    flat = TextCNN(5, vocab_size=50, embed_dim=8, num_filters=4).eval()
    model = TextCNN(5, vocab_size=50, embed_dim=8, num_filters=4).eval()
    model.load_state_dict(flat.state_dict())
    assert set_head(model, OLID_TREE) is model and isinstance(model.classifier, ConditionalLinear)
    assert model.state_dict().keys() == flat.state_dict().keys() and head_tree(model) == OLID_TREE
    ids, mask = torch.randint(1, 50, (3, 7)), torch.ones(3, 7, dtype=torch.long)
    raw = flat(ids, mask)
    with conditional_logits(model) as conditional:
        torch.testing.assert_close(model(ids, mask), raw)
    assert conditional
    torch.testing.assert_close(model(ids, mask), MarginalLogits(OLID_TREE)(raw))
    with pytest.raises(RuntimeError), conditional_logits(model):
        raise RuntimeError("a failing step")
    torch.testing.assert_close(model(ids, mask), MarginalLogits(OLID_TREE)(raw))  # marginal again
    with conditional_logits(flat) as conditional:
        assert not conditional  # a flat model is left as it is
    set_head(model, None)
    assert head_tree(model) is None and type(model.classifier) is torch.nn.Linear
    torch.testing.assert_close(model(ids, mask), raw)


def test_an_hf_model_records_its_head_in_its_config_and_reloads_with_it(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from compress.models.conditional import restore_head

    path = fixtures.write_tiny_bert(tmp_path / "bert", num_labels=5)
    model = set_head(AutoModelForSequenceClassification.from_pretrained(path).eval(), OLID_TREE)
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["conditional_head"] == OLID_TREE.to_dict()
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    restore_head(again, again.config.conditional_head)
    ids = torch.randint(5, 40, (2, 6))
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    assert head_tree(again) == OLID_TREE
    set_head(again, None)  # a flat student copied from a conditional teacher's config drops the record
    assert not hasattr(again.config, "conditional_head")


def test_int8_dynamic_quantization_leaves_the_head_in_float():
    from compress.quantize_torch import int8_module_names, torch_int8_dynamic

    torch.manual_seed(0)
    model = set_head(TextCNN(5, vocab_size=50, embed_dim=8, num_filters=4), OLID_TREE).eval()
    qmodel = torch_int8_dynamic(model, int8_module_names(model))
    ids, mask = torch.randint(1, 50, (16, 7)), torch.ones(16, 7, dtype=torch.long)
    assert head_tree(qmodel) == OLID_TREE
    assert_hierarchy_holds(torch.sigmoid(qmodel(ids, mask)).detach().numpy(), OLID_TREE)


def test_trees_without_a_parent_to_condition_on_are_refused():
    with pytest.raises(ConfigError, match="needs a label hierarchy.*head=flat"):
        LabelTree.from_schema(LabelSchema(("a", "b")))
    with pytest.raises(ConfigError, match="top-level; use head=flat"):
        LabelTree.from_schema(LabelSchema(("a", "b", "c"), (("c", "a"),), (("a", "b"),)))
    with pytest.raises(ConfigError, match="no final linear layer with 7 outputs"):
        set_head(TextCNN(5, vocab_size=50), LabelTree(7, {1: 0}))


# ---------------------------------------------------------------------------------------------- losses

# rows: not offensive; untargeted; the three targets; targeted without a target (left out of the group)
OLID_Y = np.array([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 0, 1],
                   [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=np.float64)


def reference_conditional_loss(z: np.ndarray, y: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """The OLID tree's masked conditional loss, written out row by row."""
    def bce(row: int, j: int) -> float:
        p = _sigmoid(z[row, j])
        return -(pos[j] * y[row, j] * np.log(p) + neg[j] * (1 - y[row, j]) * np.log(1 - p))

    total = 0.0
    for row in range(len(y)):
        total += bce(row, 0)  # offensive: every row
        if y[row, 0] == 1:
            total += bce(row, 1)  # targeted | offensive
        if y[row, 1] == 1 and y[row, 2:].sum() > 0:
            g = 2 + int(np.argmax(y[row, 2:]))
            logits = z[row, 2:]
            log_softmax = logits[g - 2] - np.log(np.exp(logits).sum())
            total += -pos[g] * log_softmax
    return total / (len(y) * 3)  # 3 terms: offensive, targeted, the target group


def test_conditional_loss_matches_the_formula_unweighted_and_weighted():
    rng = np.random.default_rng(0)
    z = rng.normal(size=OLID_Y.shape) * 2
    ones = np.ones(5)
    got = ConditionalLoss(OLID_TREE)(torch.tensor(z, dtype=torch.float32), torch.tensor(OLID_Y))
    assert float(got) == pytest.approx(reference_conditional_loss(z, OLID_Y, ones, ones), rel=1e-5)
    pos, neg = np.array([1.5, 0.5, 2.0, 3.0, 4.0]), np.array([0.7, 2.5, 1.0, 1.0, 1.0])
    got = ConditionalLoss(OLID_TREE, torch.tensor(pos), torch.tensor(neg))(torch.tensor(z, dtype=torch.float32),
                                                                            torch.tensor(OLID_Y))
    assert float(got) == pytest.approx(reference_conditional_loss(z, OLID_Y, pos, neg), rel=1e-5)
    # what the parent rules out is not trained: a child's logit on parent-negative rows has no gradient
    logits = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    ConditionalLoss(OLID_TREE)(logits, torch.tensor(OLID_Y)).backward()
    assert (logits.grad[0, 1:] == 0).all() and (logits.grad[1, 2:] == 0).all() and (logits.grad[5, 2:] == 0).all()
    assert (logits.grad[2:5, 2:] != 0).all()


def test_class_weights_are_balanced_on_the_rows_each_term_trains_on():
    pos, neg = conditional_class_weights(OLID_Y, OLID_TREE)
    # offensive: 7 rows, 6 positive; targeted: 6 offensive rows, 5 targeted; targets among 4 rows: IND 2, GRP 1, OTH 1
    np.testing.assert_allclose(pos.numpy(), [7 / 12, 6 / 10, 4 / 6, 4 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(neg.numpy(), [7 / 2, 6 / 2, 1, 1, 1], rtol=1e-6)
    loss = build_conditional_loss("weighted_bce", OLID_TREE, OLID_Y)
    torch.testing.assert_close(loss.pos_weight, pos) and torch.testing.assert_close(loss.neg_weight, neg)
    assert (build_conditional_loss("bce", OLID_TREE, OLID_Y).pos_weight == 1).all()


@pytest.mark.parametrize("name, kwargs, message", [
    ("focal", {}, "loss focal is not available with head=conditional.*bce or weighted_bce"),
    ("hierarchical", {}, "loss hierarchical is not available with head=conditional"),
    ("nope", {}, "unknown name 'nope'"),
    ("weighted_bce", {"params": {"pos_weight": [1, 2, 3, 4, 5]}}, "loss.params.pos_weight: head=conditional"),
    ("weighted_bce", {"pos_weight_rule": "inverse_frequency"}, "pos_weight_rule: head=conditional"),
])
def test_losses_without_a_conditional_form_are_refused(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_conditional_loss(name, OLID_TREE, OLID_Y, **kwargs)


def reference_conditional_kd(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    """Conditional KD for the OLID tree from a teacher's marginal logits ``t``, written out."""
    def bce(logit: float, target: float) -> float:
        q = _sigmoid(logit)
        return -(target * np.log(q) + (1 - target) * np.log(1 - q))

    p = _sigmoid(t)
    total = 0.0
    for row in range(len(s)):
        total += bce(s[row, 0] / temp, _sigmoid(t[row, 0] / temp))
        q = min(p[row, 1] / p[row, 0], 1.0)  # P_t(targeted | offensive), clamped
        soft = q ** (1 / temp) / (q ** (1 / temp) + (1 - q) ** (1 / temp))
        total += p[row, 0] * bce(s[row, 1] / temp, soft)
        target = p[row, 2:] ** (1 / temp) / (p[row, 2:] ** (1 / temp)).sum()
        student = s[row, 2:] / temp - np.log(np.exp(s[row, 2:] / temp).sum())
        total += p[row, 1] * (target * (np.log(target) - student)).sum()
    return total / (len(s) * 3) * temp**2


def test_conditional_kd_matches_the_formula_for_flat_and_conditional_teachers():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(8, 5)) * 2
    flat_teacher = rng.normal(size=(8, 5)) * 2
    flat_teacher[0, 1] = flat_teacher[0, 0] + 3  # a flat teacher may rank targeted above offensive: clamped
    conditional_teacher = MarginalLogits(OLID_TREE)(torch.tensor(rng.normal(size=(8, 5)) * 2)).double().numpy()
    for t in (flat_teacher, conditional_teacher):
        for temp in (1.0, 2.5):
            got = conditional_kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32),
                                      temp, OLID_TREE)
            assert float(got) == pytest.approx(reference_conditional_kd(s, t, temp), rel=1e-4)
    # a student that already equals the teacher's conditionals has zero gradient
    raw = torch.tensor(rng.normal(size=(8, 5)) * 2, dtype=torch.float32)
    student = raw.clone().requires_grad_(True)
    conditional_kd_loss(student, MarginalLogits(OLID_TREE)(raw), 2.0, OLID_TREE).backward()
    assert student.grad.abs().max() < 1e-5


def test_distillation_loss_uses_conditional_kd_for_a_tree_and_on_unlabelled_rows():
    from compress.distill import masked_distillation_loss

    rng = np.random.default_rng(4)
    s, t = (torch.tensor(rng.normal(size=(7, 5)), dtype=torch.float32) for _ in range(2))
    y = torch.tensor(OLID_Y, dtype=torch.float32)
    hard = ConditionalLoss(OLID_TREE)
    loss = DistillationLoss(hard, 2.0, 0.3, OLID_TREE)
    torch.testing.assert_close(loss(s, t, y), 0.3 * conditional_kd_loss(s, t, 2.0, OLID_TREE) + 0.7 * hard(s, y))
    none = masked_distillation_loss(s, t, y, torch.zeros(7, dtype=torch.bool), loss)
    torch.testing.assert_close(none, 0.3 * conditional_kd_loss(s, t, 2.0, OLID_TREE))
    assert DistillationLoss(BCELoss(), 2.0, 0.3).kd(s, t) != loss.kd(s, t)


# ---------------------------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def olid(tmp_path_factory):
    root = tmp_path_factory.mktemp("olid")
    return fixtures.write_olid_tsv(root / "train.tsv", n=400, seed=0), fixtures.write_olid_tsv(root / "val.tsv", 120, 1)


def _train(root: Path, olid, head: str, *extra: str):
    from compress.config import TrainConfig, load_config
    from compress.train import train

    ckpt = fixtures.write_tiny_bert(root / f"ckpt-{head}", num_labels=5)
    return train(load_config(TrainConfig, None, [
        f"model={ckpt}", f"data.data={olid[0]}", f"data.val_data={olid[1]}", f"out={root / head}", f"head={head}",
        "optim.lr=5e-3", "optim.epochs=4", "optim.batch_size=16", "optim.mixed_precision=no", "max_length=32",
        "tracking.enabled=false", *extra]))


@pytest.fixture(scope="module")
def conditional_teacher(tmp_path_factory, olid):
    return _train(tmp_path_factory.mktemp("teacher"), olid, "conditional").artifact


def _val_probs(artifact: Path, olid) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities of the reloaded artifact on the validation file, its labels)."""
    from compress.batching import encode
    from compress.data import load_dataset
    from compress.models import load_model
    from compress.predict import predict_logits, sigmoid

    val = load_dataset(olid[1])
    model, tokenizer = load_model(artifact)
    return sigmoid(predict_logits(model, encode(tokenizer, val.texts, 32))), val.labels


def test_conditional_teacher_trains_reloads_identically_and_exports_to_onnx(tmp_path, conditional_teacher, olid):
    from compress.artifact import read_info
    from compress.metrics import multilabel_metrics
    from compress.models import load_model
    from export.onnx import OnnxExportConfig, export_onnx
    from export.runtime import load as load_predictor

    info = read_info(conditional_teacher, kinds=["teacher"])
    assert info.extra["head"] == "conditional" and info.recipe["head"] == "conditional"
    assert info.exclusive == [["target_individual", "target_group", "target_other"]]
    assert head_tree(load_model(conditional_teacher)[0]) == OLID_TREE
    assert info.metrics["macro_roc_auc"] > 0.8, info.metrics["macro_roc_auc"]  # it learnt every level

    probs, labels = _val_probs(conditional_teacher, olid)
    assert_hierarchy_holds(probs, OLID_TREE)
    # the reloaded teacher scores its validation set as the trained one did
    again = multilabel_metrics(labels, probs, info.labels, np.asarray(info.thresholds))
    assert again["macro_roc_auc"] == pytest.approx(info.metrics["macro_roc_auc"], abs=1e-6)
    assert again["macro_f1"] == pytest.approx(info.metrics["macro_f1"], abs=1e-6)

    exported = export_onnx(conditional_teacher, OnnxExportConfig(out=str(tmp_path / "onnx")))
    assert exported.max_abs_diff <= exported.atol
    texts = ["you idiot kill", "those people are trash moron", "the article is good", "stupid crap"]
    onnx_probs = load_predictor(tmp_path / "onnx").predict(texts)
    torch_probs = load_predictor(conditional_teacher).predict(texts)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5)
    assert_hierarchy_holds(onnx_probs, OLID_TREE)


@pytest.mark.parametrize("student", ["textcnn", "bilstm", "distilbert"])
def test_every_student_kind_distils_a_conditional_teacher_reloads_and_exports(tmp_path, conditional_teacher, olid,
                                                                              student):
    from compress.artifact import read_info
    from compress.batching import encode
    from compress.distill import distill, load_distill_config
    from compress.models import load_model
    from compress.predict import predict_logits
    from export.onnx import OnnxExportConfig, export_onnx

    params = {"textcnn": ["student_params.embed_dim=16", "student_params.num_filters=8", "loss.name=weighted_bce"],
              "bilstm": ["student_params.embed_dim=16", "student_params.hidden=8"],
              "distilbert": ["student_layers=1"]}[student]
    result = distill(load_distill_config(str(conditional_teacher), student, None, [
        f"out={tmp_path / 's'}", f"cache_dir={tmp_path / 'cache'}", "tracking.enabled=false",
        "optim.mixed_precision=no", "optim.epochs=2", *params]))
    info = read_info(tmp_path / "s", kinds=["student"])
    assert (info.extra["head"], info.extra["kd"], info.extra["teacher_head"]) == ("conditional",) * 3
    assert info.recipe["head"] == "conditional" and np.isfinite(info.metrics["macro_roc_auc"])

    model, tokenizer = load_model(tmp_path / "s")
    assert head_tree(model) == OLID_TREE
    enc = encode(tokenizer, fixtures.synthetic_rows(40, seed=5)[0], 32)
    np.testing.assert_allclose(predict_logits(model, enc), predict_logits(result.model, enc), atol=1e-5)
    probs, _ = _val_probs(tmp_path / "s", olid)
    assert_hierarchy_holds(probs, OLID_TREE)
    exported = export_onnx(tmp_path / "s", OnnxExportConfig(out=str(tmp_path / "onnx")))
    assert exported.max_abs_diff <= exported.atol


def test_heads_cross_between_teacher_and_student(tmp_path, conditional_teacher, olid):
    """A flat student of a conditional teacher learns its marginals; a conditional student of a flat
    teacher learns the conditionals the teacher's marginals imply."""
    from compress.artifact import read_info
    from compress.distill import distill, load_distill_config
    from compress.models import load_model

    small = ["student_params.embed_dim=16", "student_params.num_filters=8", "tracking.enabled=false",
             "optim.mixed_precision=no", "optim.epochs=2", f"cache_dir={tmp_path / 'cache'}"]
    distill(load_distill_config(str(conditional_teacher), "textcnn", None, [f"out={tmp_path / 'flat-student'}", "head=flat",
                                                                             *small]))
    info = read_info(tmp_path / "flat-student")
    assert (info.extra["head"], info.extra["kd"], info.extra["teacher_head"]) == ("flat", "flat", "conditional")
    assert head_tree(load_model(tmp_path / "flat-student")[0]) is None
    assert "conditional_head" not in json.loads((tmp_path / "flat-student" / "model" / "config.json").read_text())

    flat_teacher = _train(tmp_path, olid, "flat", "optim.epochs=2").artifact
    assert read_info(flat_teacher).extra["head"] == "flat"
    result = distill(load_distill_config(str(flat_teacher), "textcnn", None, [f"out={tmp_path / 'cond'}",
                                                                              "head=conditional", *small]))
    info = read_info(tmp_path / "cond")
    assert (info.extra["head"], info.extra["kd"], info.extra["teacher_head"]) == ("conditional", "conditional", "flat")
    assert head_tree(result.model) == OLID_TREE and np.isfinite(info.metrics["macro_roc_auc"])
    assert_hierarchy_holds(_val_probs(tmp_path / "cond", olid)[0], OLID_TREE)


@pytest.mark.parametrize("mode", ["int8-static", "fp16"])
def test_quantization_keeps_the_marginalisation_float(tmp_path, conditional_teacher, olid, mode):
    from compress.artifact import read_info
    from export.quantize import QuantizeConfig, quantize
    from export.runtime import load as load_predictor

    out = quantize(conditional_teacher, QuantizeConfig(mode=mode, out=str(tmp_path / "q"), data=str(olid[1]),
                                                       max_auc_drop=0.5, calibration_samples=32))
    assert read_info(out).extra["quantization"]["float_marginal_nodes"] > 0
    texts = [" ".join(t.split()[:-1]) for t in olid[1].read_text().splitlines()[1:60]]
    assert_hierarchy_holds(load_predictor(out).predict(texts), OLID_TREE)


def test_tensorrt_qdq_keeps_the_marginalisation_float(tmp_path, conditional_teacher, olid):
    import onnx
    from transformers import AutoTokenizer

    from compress.artifact import read_info
    from export.onnx import OnnxExportConfig, export_onnx
    from export.quantize import load_guard_data, marginal_nodes
    from export.tensorrt_qdq import qdq_for_tensorrt

    exported = export_onnx(conditional_teacher, OnnxExportConfig(out=str(tmp_path / "onnx"))).artifact
    info = read_info(exported)
    data = load_guard_data(str(olid[1]), None, info.labels, info.hierarchy, 0.1, 0, None)
    tokenizer = AutoTokenizer.from_pretrained(str(exported / "tokenizer"))
    qdq = qdq_for_tensorrt(exported / "model.onnx", tokenizer, data, list(info.labels), 32, 32, 0.5, 0, tmp_path)
    marginal = set(marginal_nodes(exported / "model.onnx"))
    assert qdq.record["float_marginal_nodes"] == len(marginal) > 0
    graph = onnx.load(str(qdq.path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    assert not [n.name for n in graph.node if n.name in marginal and "DequantizeLinear" in map(producer.get, n.input)]
    assert_hierarchy_holds(qdq.probs, OLID_TREE)
