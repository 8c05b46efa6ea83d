"""compress.losses against independent float64 numpy formulas (torchtune style: pass on numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress.errors import ConfigError, DataError
from compress.losses import (
    LOSSES,
    DistillationLoss,
    build_loss,
    hidden_cosine_loss,
    kd_loss,
    pos_weight_from_labels,
)

B, L = 7, 6
ATOL = 1e-5
# Jigsaw order: toxic, severe_toxic, obscene, threat, insult, identity_hate. Label 5 is in no pair,
# so perturbing it changes only the BCE part of the hierarchical loss.
PARENTS = {1: 0, 2: 0, 4: 3}
POS_WEIGHT = [0.5, 2.0, 1.0, 3.5, 1.25, 7.0]


# --------------------------------------------------------------------------- references
# Each returns (terms, extra): (B, L) per-element terms and a scalar added after the mean, so
# loss = terms.mean() + extra. Plain numpy float64; nothing from compress.losses.


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _bce_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = _sigmoid(x)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def ref_bce(x, y):
    return _bce_terms(x, y), 0.0


def ref_weighted_bce(x, y, pos_weight):
    p = _sigmoid(x)
    w = np.asarray(pos_weight, dtype=np.float64)[None, :]
    return -(w * y * np.log(p) + (1 - y) * np.log(1 - p)), 0.0


def ref_focal(x, y, alpha=0.25, gamma=2.0):
    # torchvision.ops.sigmoid_focal_loss, written out.
    p = _sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    terms = _bce_terms(x, y) * (1 - p_t) ** gamma
    if alpha >= 0:
        terms = (alpha * y + (1 - alpha) * (1 - y)) * terms
    return terms, 0.0


def ref_asymmetric(x, y, gamma_pos=0.0, gamma_neg=4.0, clip=0.05):
    p = _sigmoid(x)
    p_m = np.maximum(p - clip, 0.0)
    return -(y * (1 - p) ** gamma_pos * np.log(p) + (1 - y) * p_m**gamma_neg * np.log(1 - p_m)), 0.0


def ref_label_smoothing(x, y, epsilon=0.1):
    return _bce_terms(x, y * (1 - epsilon) + epsilon / 2), 0.0


def ref_hierarchical(x, y, parents, weight=0.5):
    p = _sigmoid(x)
    penalty = sum(np.maximum(p[:, c] - p[:, q], 0.0).mean() for c, q in parents.items())
    return _bce_terms(x, y), weight * penalty


REFERENCES = {
    "bce": ref_bce,
    "weighted_bce": ref_weighted_bce,
    "focal": ref_focal,
    "asymmetric": ref_asymmetric,
    "label_smoothing": ref_label_smoothing,
    "hierarchical": ref_hierarchical,
}

CASES = [
    ("bce", {}),
    ("weighted_bce", {"pos_weight": POS_WEIGHT}),
    ("focal", {}),
    ("focal", {"alpha": 0.6, "gamma": 0.5}),
    ("focal", {"alpha": -1, "gamma": 3.0}),
    ("asymmetric", {}),
    ("asymmetric", {"gamma_pos": 1.0, "gamma_neg": 0.5, "clip": 0.2}),
    ("asymmetric", {"gamma_pos": 0.5, "gamma_neg": 2.0, "clip": 0.0}),
    ("label_smoothing", {}),
    ("label_smoothing", {"epsilon": 0.3}),
    ("hierarchical", {"parents": PARENTS}),
    ("hierarchical", {"parents": PARENTS, "weight": 2.0}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items() if k not in ('parents', 'pos_weight'))}"
            for name, kw in CASES]


def _reference(name: str, x: torch.Tensor, y: torch.Tensor, kwargs: dict) -> tuple[np.ndarray, float]:
    return REFERENCES[name](x.double().numpy(), y.double().numpy(), **kwargs)


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "logits": torch.randn(B, L, generator=g) * 2.5,
        "hard": (torch.rand(B, L, generator=g) < 0.4).float(),
        "soft": torch.rand(B, L, generator=g),
    }


# --------------------------------------------------------------------------- registry


def test_every_registered_loss_has_a_reference_and_a_case():
    assert REFERENCES.keys() == LOSSES.keys()
    assert {name for name, _ in CASES} == set(LOSSES)
    for name, kwargs in CASES:
        assert isinstance(build_loss(name, **kwargs), LOSSES[name])


def test_unknown_loss_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown name 'nope'.*bce.*focal.*hierarchical"):
        build_loss("nope")


def test_unknown_and_missing_parameters():
    with pytest.raises(ConfigError, match="focal: unknown parameter 'gama'; accepted: alpha, gamma"):
        build_loss("focal", gama=2.0)
    with pytest.raises(ConfigError, match="weighted_bce: pos_weight is required"):
        build_loss("weighted_bce")
    with pytest.raises(ConfigError, match="hierarchical: parents is required"):
        build_loss("hierarchical")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("targets", ["hard", "soft"])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_matches_reference(batch, name, kwargs, targets):
    x, y = batch["logits"], batch[targets]
    terms, extra = _reference(name, x, y, kwargs)
    got = build_loss(name, **kwargs)(x, y)
    assert got.dim() == 0
    assert got.item() == pytest.approx(terms.mean() + extra, abs=ATOL)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_integer_targets_and_float64_logits(batch, name, kwargs):
    x, y = batch["logits"].double(), batch["hard"]
    terms, extra = _reference(name, x, y, kwargs)
    got = build_loss(name, **kwargs)(x, y.long())
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(terms.mean() + extra, abs=1e-10)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_mean_reduction_one_element_moves_loss_by_its_term_over_BL(batch, name, kwargs):
    x, y = batch["logits"], batch["hard"]
    i, j = 3, 5  # label 5 is in no hierarchy pair
    x2 = x.clone()
    x2[i, j] += 1.7
    loss = build_loss(name, **kwargs)
    terms, extra = _reference(name, x, y, kwargs)
    terms2, extra2 = _reference(name, x2, y, kwargs)
    assert extra2 == extra
    expected = (terms2[i, j] - terms[i, j]) / (B * L)
    assert abs(expected) > 1e-4  # well above the 1e-6 tolerance
    assert (loss(x2, y) - loss(x, y)).item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_at_zero_is_bce(batch):
    x, y = batch["logits"], batch["hard"]
    assert build_loss("label_smoothing", epsilon=0.0)(x, y).item() == pytest.approx(
        build_loss("bce")(x, y).item(), abs=1e-7)


def test_asymmetric_without_focusing_or_clip_is_bce(batch):
    x, y = batch["logits"], batch["hard"]
    asl = build_loss("asymmetric", gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
    assert asl(x, y).item() == pytest.approx(build_loss("bce")(x, y).item(), abs=ATOL)


def test_focal_without_focusing_or_alpha_is_bce(batch):
    x, y = batch["logits"], batch["soft"]
    focal = build_loss("focal", alpha=-1.0, gamma=0.0)
    assert focal(x, y).item() == pytest.approx(build_loss("bce")(x, y).item(), abs=ATOL)


def test_asymmetric_clip_silences_easy_negatives():
    x = torch.tensor([[-3.0, 0.0]])  # sigmoid(-3) = 0.047 < clip
    y = torch.zeros(1, 2)
    x.requires_grad_(True)
    build_loss("asymmetric", clip=0.05)(x, y).backward()
    assert x.grad[0, 0].item() == 0.0
    assert x.grad[0, 1].item() > 0.0


def test_hierarchical_penalty_zero_when_children_below_parents(batch):
    x, y = batch["logits"].clone(), batch["hard"]
    for child, parent in PARENTS.items():
        x[:, child] = torch.minimum(x[:, child], x[:, parent] - 0.1)
    bce = build_loss("bce")(x, y)
    assert build_loss("hierarchical", parents=PARENTS, weight=3.0)(x, y).item() == pytest.approx(bce.item(), abs=1e-7)

    x[2, 1] = x[2, 0] + 2.0  # one child above its parent in one row
    bce = build_loss("bce")(x, y)
    hier = build_loss("hierarchical", parents=PARENTS, weight=3.0)(x, y)
    gap = (torch.sigmoid(x[2, 1]) - torch.sigmoid(x[2, 0])).item()
    assert hier.item() - bce.item() == pytest.approx(3.0 * gap / B, abs=ATOL)
    assert hier.item() > bce.item()


# --------------------------------------------------------------------------- pos_weight rules

LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])  # N = 4, N+ = (3, 1, 0)


def test_pos_weight_balanced():
    got = pos_weight_from_labels(LABELS, "balanced")
    assert got.dtype == torch.float32 and got.shape == (3,)
    # N / (2 N+) = 4/6, 4/2; no positives -> 1.
    torch.testing.assert_close(got, torch.tensor([2 / 3, 2.0, 1.0]))


def test_pos_weight_inverse_frequency():
    got = pos_weight_from_labels(torch.as_tensor(LABELS), "inverse_frequency")
    # 1/freq = 4/3, 4; the no-positive label keeps 1, the others are scaled to sum to 3 - 1 = 2.
    torch.testing.assert_close(got, torch.tensor([0.5, 1.5, 1.0]))
    assert got.sum().item() == pytest.approx(3.0)

    got = pos_weight_from_labels(LABELS[:, :2], "inverse_frequency")
    torch.testing.assert_close(got, torch.tensor([0.5, 1.5]))


def test_pos_weight_feeds_weighted_bce(batch):
    y = batch["hard"]
    weights = pos_weight_from_labels(y.numpy(), "balanced")
    x = batch["logits"]
    terms, _ = ref_weighted_bce(x.double().numpy(), y.double().numpy(), weights.double().numpy())
    assert build_loss("weighted_bce", pos_weight=weights)(x, y).item() == pytest.approx(terms.mean(), abs=ATOL)


def test_pos_weight_bad_input():
    with pytest.raises(ConfigError, match="rule must be one of balanced, inverse_frequency"):
        pos_weight_from_labels(LABELS, "sqrt")
    with pytest.raises(DataError, match=r"\(N, L\)"):
        pos_weight_from_labels(np.ones(4), "balanced")
    with pytest.raises(DataError, match="no NaN"):
        pos_weight_from_labels(np.array([[0.0, np.nan]]), "balanced")
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        pos_weight_from_labels(np.array([[0, 2]]), "balanced")


# --------------------------------------------------------------------------- stability


def _extreme(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(8, 6) logits of +-scale and +-scale/2 with 0/1 targets: every (sign, target) pair occurs."""
    values = torch.tensor([scale, -scale, scale / 2, -scale / 2])
    r, j = torch.meshgrid(torch.arange(8), torch.arange(L), indexing="ij")
    return values[(r + j) % 4].clone(), ((r // 4 + j) % 2).float()


@pytest.mark.parametrize("scale", [100.0, 50.0])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_extreme_logits_finite_loss_and_grads(name, kwargs, scale):
    x, y = _extreme(scale)
    x.requires_grad_(True)
    loss = build_loss(name, **kwargs)(x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()


def test_extreme_bce_value_is_exact():
    x, y = _extreme(100.0)
    # Wrong-sided logits cost |x|, right-sided ones ~0.
    expected = torch.where((x > 0) == (y > 0), 0.0, x.abs()).mean()
    assert build_loss("bce")(x, y).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("scale", [100.0, 50.0])
def test_extreme_distillation_finite(scale):
    s, y = _extreme(scale)
    t = -s.flip(0)
    s.requires_grad_(True)
    loss = DistillationLoss(build_loss("focal"), temperature=0.5, alpha=0.5)(s, t, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


# --------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("focal", {"gamma": -1}, "^focal: gamma must be >= 0, got -1$"),
        ("focal", {"gamma": float("nan")}, "focal: gamma must be finite"),
        ("focal", {"gamma": "two"}, "focal: gamma must be a number"),
        ("focal", {"alpha": 1.5}, "focal: alpha must be in"),
        ("asymmetric", {"gamma_pos": -0.5}, "asymmetric: gamma_pos must be >= 0"),
        ("asymmetric", {"gamma_neg": -1}, "asymmetric: gamma_neg must be >= 0"),
        ("asymmetric", {"clip": 1.0}, r"asymmetric: clip must be in \[0, 1\)"),
        ("asymmetric", {"clip": -0.01}, "asymmetric: clip must be in"),
        ("label_smoothing", {"epsilon": -0.1}, "label_smoothing: epsilon must be in"),
        ("label_smoothing", {"epsilon": 1.0}, "label_smoothing: epsilon must be in"),
        ("weighted_bce", {"pos_weight": [1.0, -1.0]}, "weighted_bce: pos_weight must be finite and > 0"),
        ("weighted_bce", {"pos_weight": [1.0, float("inf")]}, "weighted_bce: pos_weight must be finite"),
        ("weighted_bce", {"pos_weight": []}, "weighted_bce: pos_weight must be a non-empty 1-D"),
        ("weighted_bce", {"pos_weight": [[1.0, 2.0]]}, "weighted_bce: pos_weight must be a non-empty 1-D"),
        ("weighted_bce", {"pos_weight": ["a"]}, "weighted_bce: pos_weight must be a list"),
        ("hierarchical", {"parents": {}}, "hierarchical: parents must be a non-empty mapping"),
        ("hierarchical", {"parents": [(1, 0)]}, "hierarchical: parents must be a non-empty mapping"),
        ("hierarchical", {"parents": {1: 1}}, "hierarchical: parents must be non-negative indices with child != parent"),
        ("hierarchical", {"parents": {1: -1}}, "hierarchical: parents must be non-negative"),
        ("hierarchical", {"parents": {"a": 0}}, "hierarchical: parents must map label indices"),
        ("hierarchical", {"parents": {1: 0}, "weight": -1}, "hierarchical: weight must be >= 0"),
    ],
)
def test_bad_parameters_raise_config_error(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(name, **kwargs)


def test_label_count_mismatch_is_a_config_error(batch):
    x, y = batch["logits"], batch["hard"]
    with pytest.raises(ConfigError, match="pos_weight has 3 entries but the logits have 6 labels"):
        build_loss("weighted_bce", pos_weight=[1.0, 2.0, 3.0])(x, y)
    with pytest.raises(ConfigError, match="parents name label 9"):
        build_loss("hierarchical", parents={9: 0})(x, y)


def test_shape_mismatch_is_a_value_error(batch):
    with pytest.raises(ValueError, match=r"must both be \(B, L\)"):
        build_loss("bce")(batch["logits"], batch["hard"][:, :5])


# --------------------------------------------------------------------------- distillation


def _ref_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    s, t = s.double().numpy() / temperature, t.double().numpy() / temperature
    return float(_bce_terms(s, _sigmoid(t)).mean() * temperature**2)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.5])
def test_kd_loss_matches_formula(batch, temperature):
    s = batch["logits"]
    t = torch.randn(B, L, generator=torch.Generator().manual_seed(1)) * 3
    assert kd_loss(s, t, temperature).item() == pytest.approx(_ref_kd(s, t, temperature), abs=ATOL)


def test_kd_loss_at_t1_is_bce_against_teacher_probabilities(batch):
    s = batch["logits"]
    t = torch.randn(B, L, generator=torch.Generator().manual_seed(2))
    expected = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))
    assert kd_loss(s, t, 1.0).item() == pytest.approx(expected.item(), abs=1e-7)


def test_kd_loss_treats_teacher_as_fixed(batch):
    s = batch["logits"].clone().requires_grad_(True)
    t = torch.randn(B, L, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is None


def test_distillation_loss_mixing(batch):
    s, y = batch["logits"], batch["hard"]
    t = torch.randn(B, L, generator=torch.Generator().manual_seed(4)) * 2
    hard = build_loss("weighted_bce", pos_weight=POS_WEIGHT)
    kd = _ref_kd(s, t, 3.0)
    hard_value = hard(s, y).item()
    assert DistillationLoss(hard, temperature=3.0, alpha=1.0)(s, t, y).item() == pytest.approx(kd, abs=ATOL)
    assert DistillationLoss(hard, temperature=3.0, alpha=0.0)(s, t, y).item() == pytest.approx(hard_value, abs=ATOL)
    mixed = DistillationLoss(hard, temperature=3.0, alpha=0.3)(s, t, y).item()
    assert mixed == pytest.approx(0.3 * kd + 0.7 * hard_value, abs=ATOL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0}, "distillation: temperature must be > 0, got 0"),
        ({"temperature": -2.0}, "distillation: temperature must be > 0"),
        ({"alpha": -0.1}, r"distillation: alpha must be in \[0, 1\]"),
        ({"alpha": 1.5}, r"distillation: alpha must be in \[0, 1\]"),
    ],
)
def test_distillation_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DistillationLoss(build_loss("bce"), **kwargs)


def test_kd_loss_bad_temperature(batch):
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        kd_loss(batch["logits"], batch["logits"], 0.0)


# --------------------------------------------------------------------------- hidden states


def _ref_hidden(students, teachers, mask) -> float:
    per_pair = []
    for s, t in zip(students, teachers, strict=True):
        s, t = s.double().numpy(), t.double().numpy()
        dists = [
            1 - s[b, i] @ t[b, i] / (np.linalg.norm(s[b, i]) * np.linalg.norm(t[b, i]))
            for b in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[b, i]
        ]
        per_pair.append(np.mean(dists))
    return float(np.mean(per_pair))


@pytest.fixture
def hidden():
    g = torch.Generator().manual_seed(5)
    students = [torch.randn(3, 5, 8, generator=g) for _ in range(2)]
    teachers = [torch.randn(3, 5, 8, generator=g) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return students, teachers, mask


def test_hidden_cosine_matches_formula(hidden):
    students, teachers, mask = hidden
    got = hidden_cosine_loss(students, teachers, mask)
    assert got.item() == pytest.approx(_ref_hidden(students, teachers, mask), abs=ATOL)
    assert hidden_cosine_loss(teachers, teachers, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_cosine_ignores_padding(hidden):
    students, teachers, mask = hidden
    before = hidden_cosine_loss(students, teachers, mask)
    padded = [s.clone().requires_grad_(True) for s in students]
    with torch.no_grad():
        for s in padded:
            s[mask == 0] = 0.0  # zero vectors: cosine is undefined there
    after = hidden_cosine_loss(padded, teachers, mask)
    after.backward()
    assert after.item() == pytest.approx(before.item(), abs=1e-6)
    for s in padded:
        assert torch.isfinite(s.grad).all()
        assert (s.grad[mask == 0] == 0).all()


def test_hidden_cosine_rejects_mismatched_layers(hidden):
    students, teachers, mask = hidden
    with pytest.raises(ValueError, match="same non-zero number"):
        hidden_cosine_loss(students, teachers[:1], mask)
    with pytest.raises(ValueError, match=r"must both be \(B, T, H\)"):
        hidden_cosine_loss([students[0][..., :4]], [teachers[0]], mask)
