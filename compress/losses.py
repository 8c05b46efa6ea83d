"""Multi-label losses shared by training and distillation.

Every loss in :data:`LOSSES` is an ``nn.Module`` whose ``forward(logits, targets)`` takes
``(B, L)`` logits and ``(B, L)`` 0/1 (or soft, in [0, 1]) targets and returns the mean over all
``B * L`` elements, a scalar. :func:`build_loss` builds one by name from plain keyword arguments
(what a config's ``loss.params`` holds); a bad value raises :class:`~compress.errors.ConfigError`
naming the loss and the field.

Every loss is written in log-space (``logsigmoid``) so that it stays finite, with finite
gradients, at logits of +-100 in float32, where ``sigmoid`` saturates to exactly 0 or 1.

Distillation (``compress distill``) uses :func:`kd_loss`, :class:`DistillationLoss` and
:func:`hidden_cosine_loss`; they take teacher outputs and so are not in :data:`LOSSES`.

A conditional head (``head=conditional``, :mod:`compress.models.conditional`) trains with
:class:`ConditionalLoss` on its raw conditional logits (:func:`build_conditional_loss`) and distils
with :func:`conditional_kd_loss`; they take the label tree and so are not in :data:`LOSSES` either.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compress.errors import ConfigError, DataError

if TYPE_CHECKING:
    from compress.models.conditional import LabelTree

__all__ = [
    "LOSSES",
    "AsymmetricLoss",
    "BCELoss",
    "ConditionalLoss",
    "DistillationLoss",
    "FocalLoss",
    "HierarchicalLoss",
    "LabelSmoothingBCELoss",
    "WeightedBCELoss",
    "build_conditional_loss",
    "build_loss",
    "conditional_class_weights",
    "conditional_kd_loss",
    "hidden_cosine_loss",
    "kd_loss",
    "pos_weight_from_labels",
]

POS_WEIGHT_RULES = ("balanced", "inverse_frequency")


# --------------------------------------------------------------------------- argument checks


def _number(loss: str, field: str, value: Any) -> float:
    """``value`` as a finite float, or ConfigError naming ``loss: field``.

    Strings are accepted because PyYAML reads ``1e-3`` (no dot) as a string, and config
    overrides are parsed as YAML scalars.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{loss}: {field} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{loss}: {field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{loss}: {field} must be finite, got {value!r}")
    return number


def _require(cond: bool, loss: str, field: str, message: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{loss}: {field} must be {message}, got {value!r}")


def _pair(loss: str, logits: Tensor, targets: Tensor) -> Tensor:
    """Check ``(B, L)`` logits against targets; return targets in the logits' dtype.

    Targets arrive as int64 or bool from label batches; the BCE kernels need floats.
    """
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"{loss}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (B, L)"
        )
    return targets.to(dtype=logits.dtype)


# --------------------------------------------------------------------------- losses


class BCELoss(nn.Module):
    """Plain binary cross-entropy on logits, mean over all ``B * L`` elements."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L); targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("bce", logits, targets)
        return F.binary_cross_entropy_with_logits(logits, targets)


class WeightedBCELoss(nn.Module):
    """BCE with a per-label weight on the positive term (rare labels count more).

    Args:
        pos_weight: (L,) positive weights, > 0; see :func:`pos_weight_from_labels`.
    """

    pos_weight: Tensor

    def __init__(self, pos_weight: Tensor | Sequence[float] | np.ndarray) -> None:
        super().__init__()
        try:
            if isinstance(pos_weight, Tensor):  # may live on a GPU, where np.asarray fails
                pos_weight = pos_weight.detach().cpu().double().numpy()
            weight = torch.as_tensor(np.asarray(pos_weight, dtype=np.float64), dtype=torch.float32)
        except (TypeError, ValueError):
            raise ConfigError(f"weighted_bce: pos_weight must be a list of L numbers, got {pos_weight!r}") from None
        _require(weight.dim() == 1 and weight.numel() > 0, "weighted_bce", "pos_weight",
                 "a non-empty 1-D list of L numbers", pos_weight)
        _require(bool(torch.isfinite(weight).all() and (weight > 0).all()), "weighted_bce", "pos_weight",
                 "finite and > 0 for every label", weight.tolist())
        # Not persistent: a loss is rebuilt from config, never loaded from a checkpoint.
        self.register_buffer("pos_weight", weight, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L); targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("weighted_bce", logits, targets)
        if logits.shape[1] != self.pos_weight.numel():
            raise ConfigError(f"weighted_bce: pos_weight has {self.pos_weight.numel()} entries "
                              f"but the logits have {logits.shape[1]} labels")
        # .to(logits): follows the logits' device and dtype even if the module was never moved.
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight.to(logits))

    def extra_repr(self) -> str:
        return f"pos_weight={[round(w, 4) for w in self.pos_weight.tolist()]}"


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) in the torchvision ``sigmoid_focal_loss`` convention.

    ``loss = alpha_t * (1 - p_t) ** gamma * BCE(x, y)`` with ``p = sigmoid(x)``,
    ``p_t = p y + (1 - p)(1 - y)`` and ``alpha_t = alpha y + (1 - alpha)(1 - y)``, mean-reduced.

    Args:
        alpha: weight of positives in [0, 1] (negatives get ``1 - alpha``); < 0 disables it.
        gamma: focusing exponent, >= 0; 0 gives (alpha-weighted) BCE.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = _number("focal", "alpha", alpha)
        self.gamma = _number("focal", "gamma", gamma)
        _require(self.alpha <= 1, "focal", "alpha", "in [0, 1] (or < 0 to disable weighting)", alpha)
        _require(self.gamma >= 0, "focal", "gamma", ">= 0", gamma)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L); targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("focal", logits, targets)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, L)
        # 1 - p_t = p (1 - y) + (1 - p) y, taken in log-space: (1 - p_t) ** gamma through pow()
        # has an infinite derivative at 0 for gamma < 1, and 1 - p_t is exactly 0 once sigmoid
        # saturates, which would turn the gradient into inf * 0 = NaN. log(0) = -inf for hard
        # targets drops out of logaddexp exactly.
        log_one_minus_pt = torch.logaddexp(
            torch.log1p(-targets) + F.logsigmoid(logits), torch.log(targets) + F.logsigmoid(-logits)
        )
        loss = torch.exp(self.gamma * log_one_minus_pt) * ce
        if self.alpha >= 0:
            loss = (self.alpha * targets + (1 - self.alpha) * (1 - targets)) * loss
        return loss.mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021, ASL) on logits, mean-reduced.

    With ``p = sigmoid(x)`` and the shifted probability ``p_m = max(p - clip, 0)`` for negatives::

        loss = -(y (1 - p) ** gamma_pos log p + (1 - y) p_m ** gamma_neg log(1 - p_m))

    Args:
        gamma_pos: focusing exponent of the positive term, >= 0.
        gamma_neg: focusing exponent of the negative term, >= 0.
        clip: probability margin in [0, 1); easy negatives (p <= clip) contribute nothing.
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05) -> None:
        super().__init__()
        self.gamma_pos = _number("asymmetric", "gamma_pos", gamma_pos)
        self.gamma_neg = _number("asymmetric", "gamma_neg", gamma_neg)
        self.clip = _number("asymmetric", "clip", clip)
        _require(self.gamma_pos >= 0, "asymmetric", "gamma_pos", ">= 0", gamma_pos)
        _require(self.gamma_neg >= 0, "asymmetric", "gamma_neg", ">= 0", gamma_neg)
        _require(0 <= self.clip < 1, "asymmetric", "clip", "in [0, 1)", clip)
        # log(0) = -inf is exact here: logaddexp(a, -inf) = a, so clip = 0 needs no branch.
        self._log_clip = math.log(self.clip) if self.clip > 0 else -math.inf

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L); targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("asymmetric", logits, targets)
        log_p = F.logsigmoid(logits)  # (B, L)
        log_one_minus_p = F.logsigmoid(-logits)
        positive = torch.exp(self.gamma_pos * log_one_minus_p) * log_p

        # 1 - p_m = min(1 - p + clip, 1): logaddexp keeps it exact where 1 - p underflows,
        # and the clamp at 0 (p_m = 0) zeroes the gradient of easy negatives as ASL intends.
        log_one_minus_pm = torch.logaddexp(log_one_minus_p, torch.full_like(logits, self._log_clip)).clamp(max=0)
        p_m = (torch.sigmoid(logits) - self.clip).clamp(min=0)
        # Where p_m = 0 the term is 0 anyway (log(1 - 0) = 0), but pow(0, gamma < 1) has an
        # infinite derivative; evaluate pow on a safe value there so the gradient stays finite.
        active = p_m > 0
        focus = torch.where(active, torch.where(active, p_m, torch.ones_like(p_m)) ** self.gamma_neg, 0.0)
        negative = focus * log_one_minus_pm

        return -(targets * positive + (1 - targets) * negative).mean()

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"


class LabelSmoothingBCELoss(nn.Module):
    """BCE against smoothed targets ``y (1 - epsilon) + epsilon / 2``.

    Args:
        epsilon: smoothing in [0, 1); 0 gives plain BCE. 1 is refused: every target would be
            0.5 and the loss would ignore the labels.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = _number("label_smoothing", "epsilon", epsilon)
        _require(0 <= self.epsilon < 1, "label_smoothing", "epsilon", "in [0, 1)", epsilon)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L); targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("label_smoothing", logits, targets)
        smoothed = targets * (1 - self.epsilon) + self.epsilon / 2
        return F.binary_cross_entropy_with_logits(logits, smoothed)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"


class HierarchicalLoss(nn.Module):
    """BCE plus a penalty when a child label is more probable than its parent.

    ``loss = BCE + weight * sum_pairs mean_B relu(sigmoid(x_child) - sigmoid(x_parent))``
    (e.g. ``severe_toxic`` should never outscore ``toxic``).

    Args:
        parents: child label index -> parent label index; at least one pair.
        weight: penalty weight, >= 0.
    """

    child_index: Tensor
    parent_index: Tensor

    def __init__(self, parents: Mapping[int, int], weight: float = 0.5) -> None:
        super().__init__()
        self.weight = _number("hierarchical", "weight", weight)
        _require(self.weight >= 0, "hierarchical", "weight", ">= 0", weight)
        _require(isinstance(parents, Mapping) and len(parents) > 0, "hierarchical", "parents",
                 "a non-empty mapping child index -> parent index", parents)
        pairs = []
        for child, parent in parents.items():
            try:
                pair = (int(child), int(parent))
            except (TypeError, ValueError):
                raise ConfigError(f"hierarchical: parents must map label indices to label indices, "
                                  f"got {child!r} -> {parent!r}") from None
            _require(min(pair) >= 0 and pair[0] != pair[1], "hierarchical", "parents",
                     "non-negative indices with child != parent", f"{child!r} -> {parent!r}")
            pairs.append(pair)
        self.parents = dict(pairs)
        self.register_buffer("child_index", torch.tensor([c for c, _ in pairs]), persistent=False)
        self.register_buffer("parent_index", torch.tensor([p for _, p in pairs]), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L); targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("hierarchical", logits, targets)
        largest = max(max(self.parents), max(self.parents.values()))
        if largest >= logits.shape[1]:
            raise ConfigError(f"hierarchical: parents name label {largest} but the logits have "
                              f"{logits.shape[1]} labels")
        bce = F.binary_cross_entropy_with_logits(logits, targets)
        probs = torch.sigmoid(logits)
        child = probs[:, self.child_index.to(logits.device)]  # (B, P)
        parent = probs[:, self.parent_index.to(logits.device)]  # (B, P)
        penalty = F.relu(child - parent).mean(dim=0).sum()
        return bce + self.weight * penalty

    def extra_repr(self) -> str:
        return f"parents={self.parents}, weight={self.weight}"


LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "weighted_bce": WeightedBCELoss,
    "focal": FocalLoss,
    "asymmetric": AsymmetricLoss,
    "label_smoothing": LabelSmoothingBCELoss,
    "hierarchical": HierarchicalLoss,
}


def _check_known(name: str) -> None:
    if name not in LOSSES:
        raise ConfigError(f"loss: unknown name {name!r}; known: {', '.join(LOSSES)}")


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """The loss registered as ``name``, built from keyword arguments.

    Raises:
        ConfigError: unknown name (the message lists the known ones), an unknown or missing
            parameter, or a bad value.
    """
    _check_known(name)
    cls = LOSSES[name]
    params = {
        k: p for k, p in inspect.signature(cls.__init__).parameters.items()
        if k != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        accepted = ", ".join(params) or "no parameters"
        raise ConfigError(f"{name}: unknown parameter {unknown[0]!r}; accepted: {accepted}")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in kwargs:
            raise ConfigError(f"{name}: {key} is required")
    return cls(**kwargs)


def pos_weight_from_labels(labels: np.ndarray | Tensor, rule: str = "balanced") -> Tensor:
    """Per-label positive weights for ``weighted_bce`` from a training label matrix.

    Rules, with ``N`` rows and ``N+`` positives of a label:

    - ``"balanced"``: ``N / (2 N+)`` (positives and negatives carry equal total weight).
    - ``"inverse_frequency"``: ``N / N+``, scaled so the ``L`` weights sum to ``L``
      (the mDeBERTa Jigsaw recipe).

    A label with no positives gets weight 1: there is nothing to balance, and ``N / 0`` would
    be infinite. Under ``inverse_frequency`` the other labels share the remaining sum so the
    total stays ``L``.

    Args:
        labels: (N, L) 0/1 (or soft) labels, numpy array or tensor.
        rule: ``"balanced"`` or ``"inverse_frequency"``.

    Returns:
        (L,) float32 weights, all > 0.
    """
    if rule not in POS_WEIGHT_RULES:
        raise ConfigError(f"pos_weight_from_labels: rule must be one of {', '.join(POS_WEIGHT_RULES)}, "
                          f"got {rule!r}")
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
        raise DataError(f"pos_weight_from_labels: labels must be a non-empty (N, L) matrix, got shape {y.shape}")
    if not np.isfinite(y).all() or (y < 0).any() or (y > 1).any():
        raise DataError("pos_weight_from_labels: labels must be in [0, 1] with no NaN; clean the label columns")
    n = y.shape[0]
    positives = y.sum(axis=0)  # (L,)
    has_pos = positives > 0
    weights = np.ones(y.shape[1], dtype=np.float64)
    if rule == "balanced":
        weights[has_pos] = n / (2.0 * positives[has_pos])
    elif has_pos.any():
        inverse = n / positives[has_pos]
        weights[has_pos] = inverse * has_pos.sum() / inverse.sum()
    return torch.as_tensor(weights, dtype=torch.float32)


# --------------------------------------------------------------------------- conditional heads

CONDITIONAL_LOSSES = ("bce", "weighted_bce")


def _binary_terms(logits: Tensor, targets: Tensor, pos_weight: Tensor, neg_weight: Tensor) -> Tensor:
    """Per-element weighted BCE ``w+ y softplus(-z) + w- (1 - y) softplus(z)``, (B, K)."""
    return pos_weight * targets * F.softplus(-logits) + neg_weight * (1 - targets) * F.softplus(logits)


class ConditionalLoss(nn.Module):
    """The masked loss of a conditional head, on its raw conditional logits ``z`` (B, L).

    With targets ``y`` (B, L) and the label tree (:class:`~compress.models.conditional.LabelTree`):

    * a top-level label ``j`` (in no group): ``BCE(z_j, y_j)`` on every row;
    * a plain child ``c`` of parent ``p``: ``BCE(z_c, y_c)`` only on rows with ``y_p = 1``: it learns
      ``P(c | p)``, and rows where the parent is absent say nothing about it;
    * an exclusive group ``G`` under parent ``p``: the cross-entropy of ``softmax(z_G)`` against the
      positive member (``y_G / sum(y_G)``), on rows with ``y_p = 1`` and a positive member.

    Class weights turn a binary term into ``w+ y softplus(-z) + w- (1 - y) softplus(z)`` and scale a
    group term by its target member's weight (:func:`conditional_class_weights`). The result is the
    mean over (row, term) pairs, a masked-out pair counting 0: ``sum / (B * T)`` with ``T`` = labels
    outside groups + groups.

    Args:
        tree: the label tree.
        pos_weight / neg_weight: (L,) weights of positives / negatives (a group member's class weight
            is its ``pos_weight``); None for 1.
    """

    pos_weight: Tensor
    neg_weight: Tensor

    def __init__(self, tree: LabelTree, pos_weight: Tensor | None = None, neg_weight: Tensor | None = None) -> None:
        super().__init__()
        self.tree = tree
        n = tree.num_labels
        binary = tree.binary_labels()
        self.num_terms = len(binary) + len(tree.groups)
        ones = torch.ones(n)
        self.register_buffer("pos_weight", ones if pos_weight is None else torch.as_tensor(pos_weight).float(),
                             persistent=False)
        self.register_buffer("neg_weight", ones if neg_weight is None else torch.as_tensor(neg_weight).float(),
                             persistent=False)
        self.register_buffer("binary", torch.tensor(binary), persistent=False)
        # the target column that masks each binary label's rows: its parent's, or column L (all ones) at the top
        self.register_buffer("binary_parent", torch.tensor([tree.parents.get(j, n) for j in binary]),
                             persistent=False)
        for k, group in enumerate(tree.groups):
            self.register_buffer(f"group_{k}", torch.tensor(group), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Args: logits (B, L) raw conditional; targets (B, L) in [0, 1]. Returns: scalar."""
        targets = _pair("conditional", logits.float(), targets)
        z = logits.float()
        if z.shape[1] != self.tree.num_labels:
            raise ConfigError(f"conditional: the label tree has {self.tree.num_labels} labels but the logits have "
                              f"{z.shape[1]}")
        padded = torch.cat([targets, torch.ones_like(targets[:, :1])], dim=1)  # (B, L + 1)
        mask = padded.index_select(1, self.binary_parent)  # (B, K)
        binary = self.binary
        total = (mask * _binary_terms(z.index_select(1, binary), targets.index_select(1, binary),
                                      self.pos_weight[binary], self.neg_weight[binary])).sum()
        for k, group in enumerate(self.tree.groups):
            index = getattr(self, f"group_{k}")
            y = targets.index_select(1, index)  # (B, G)
            present = y.sum(dim=1, keepdim=True)
            share = y / present.clamp_min(1e-12)  # the target distribution over the members
            row = -(share * self.pos_weight[index] * F.log_softmax(z.index_select(1, index), dim=1)).sum(dim=1)
            parent = targets[:, self.tree.parent_of_group(group)]
            total = total + (parent * (present.squeeze(1) > 0) * row).sum()
        return total / (z.shape[0] * self.num_terms)

    def extra_repr(self) -> str:
        return f"terms={self.num_terms}, weighted={bool((self.pos_weight != 1).any() or (self.neg_weight != 1).any())}"


def conditional_class_weights(labels: np.ndarray | Tensor, tree: LabelTree) -> tuple[Tensor, Tensor]:
    """Class-balanced weights of every term of :class:`ConditionalLoss`, counted on the rows it trains on.

    A binary label over its ``N`` rows (all rows for a top-level label, parent-positive rows for a
    child) with ``N+`` positives and ``N-`` negatives gets ``w+ = N / (2 N+)`` and ``w- = N / (2 N-)``
    (the two classes carry equal total weight: OLID's 524 untargeted tweets weigh as much as its 3,876
    targeted ones). A group member ``g`` of ``K`` gets ``N / (K N_g)`` over the group's rows. A class
    without examples gets 1.

    Args:
        labels: (N, L) training labels in [0, 1].
        tree: the label tree.

    Returns:
        ((L,) positive weights, group members' class weights included; (L,) negative weights), float32.
    """
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != tree.num_labels:
        raise DataError(f"conditional_class_weights: labels must be (N, {tree.num_labels}), got shape {y.shape}")
    rows = np.ones(len(y))
    pos, neg = np.ones(tree.num_labels), np.ones(tree.num_labels)
    for j in tree.binary_labels():
        weight = y[:, tree.parents[j]] if j in tree.parents else rows
        n, n_pos = weight.sum(), (weight * y[:, j]).sum()
        if n_pos > 0:
            pos[j] = n / (2 * n_pos)
        if n - n_pos > 0:
            neg[j] = n / (2 * (n - n_pos))
    for group in tree.groups:
        members = y[:, list(group)]
        counts = (y[:, tree.parent_of_group(group)][:, None] * members).sum(axis=0)  # (G,)
        for j, count in zip(group, counts, strict=True):
            if count > 0:
                pos[j] = counts.sum() / (len(group) * count)
    return torch.as_tensor(pos, dtype=torch.float32), torch.as_tensor(neg, dtype=torch.float32)


def build_conditional_loss(name: str, tree: LabelTree, labels: np.ndarray | Tensor,
                           params: Mapping[str, Any] | None = None, pos_weight_rule: str | None = None) -> ConditionalLoss:
    """The :class:`ConditionalLoss` a ``loss.name`` asks for: ``bce`` unweighted, ``weighted_bce`` with
    :func:`conditional_class_weights` from the training ``labels`` (N, L).

    Raises:
        ConfigError: an unknown name, a loss that has no conditional form (focal, asymmetric,
            label_smoothing; hierarchical is what the head does by construction), loss parameters, or
            a ``pos_weight_rule`` other than balanced.
    """
    _check_known(name)
    if name not in CONDITIONAL_LOSSES:
        raise ConfigError(f"loss {name} is not available with head=conditional (it trains masked BCE / "
                          f"cross-entropy on the conditional rows); use loss.name={' or '.join(CONDITIONAL_LOSSES)}, "
                          "or head=flat")
    if params:
        raise ConfigError(f"loss.params.{sorted(params)[0]}: head=conditional takes no loss parameters "
                          "(weighted_bce computes class-balanced weights from the data); remove it")
    if pos_weight_rule not in (None, "balanced"):
        raise ConfigError(f"loss.pos_weight_rule: head=conditional weights classes balanced, got "
                          f"{pos_weight_rule!r}; remove it or set it to balanced")
    if name == "bce":
        return ConditionalLoss(tree)
    return ConditionalLoss(tree, *conditional_class_weights(labels, tree))


# --------------------------------------------------------------------------- distillation


def _check_temperature(temperature: float) -> float:
    value = _number("distillation", "temperature", temperature)
    _require(value > 0, "distillation", "temperature", "> 0", temperature)
    return value


def _check_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> float:
    """The temperature, once it and the two (B, L) logit shapes are checked."""
    t = _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"distillation: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must both be (B, L)")
    return t


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Multi-label knowledge distillation: per-label BCE against the teacher's soft labels.

    ``mean(BCE_with_logits(s / T, sigmoid(t / T))) * T**2``; the ``T**2`` keeps gradient
    magnitudes comparable across temperatures (Hinton et al. 2015). The teacher is a fixed
    target: its logits are detached.

    Args:
        student_logits: (B, L).
        teacher_logits: (B, L), e.g. from the soft-label cache.
        temperature: T > 0.

    Returns:
        Scalar.
    """
    t = _check_kd(student_logits, teacher_logits, temperature)
    soft = torch.sigmoid(teacher_logits.detach().to(student_logits.dtype) / t)
    return F.binary_cross_entropy_with_logits(student_logits / t, soft) * (t * t)


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def conditional_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float, tree: LabelTree) -> Tensor:
    """Knowledge distillation of a conditional student from a teacher's marginal logits.

    The teacher (flat or conditional) gives marginals ``P_t = sigmoid(t)``; its conditionals are
    ``P_t(c | p) = P_t(c) / P_t(p)``, clamped to 1 (a flat teacher may rank a child above its parent).
    With temperature ``T``, per term:

    * a top-level label: ``BCE(s / T, sigmoid(t / T))``, as :func:`kd_loss`;
    * a plain child ``c`` of ``p``: ``P_t(p) * BCE(s_c / T, sigmoid(logit(P_t(c | p)) / T))``;
    * a group ``G`` under ``p``: ``P_t(p) * KL(softmax(log P_t(G) / T) || softmax(s_G / T))`` (the
      parent cancels in the softmax; a flat teacher's group is renormalised).

    Soft targets for a child count only as much as the teacher believes its parent. The sum over
    terms is divided by ``B * T_terms`` (as :class:`ConditionalLoss`) and multiplied by ``T**2``.

    Args:
        student_logits: (B, L) the student's raw conditional logits.
        teacher_logits: (B, L) the teacher's marginal logits (what its forward returns).
        temperature: T > 0.
        tree: the label tree.

    Returns:
        Scalar.
    """
    t = _check_kd(student_logits, teacher_logits, temperature)
    s, t_logits = student_logits.float(), teacher_logits.detach().float()
    log_p = F.logsigmoid(t_logits)  # (B, L) teacher log marginals
    total = s.new_zeros(())
    for j in tree.binary_labels():
        if j in tree.parents:
            log_q = (log_p[:, j] - log_p[:, tree.parents[j]]).clamp(max=0.0)  # log P_t(c | p)
            tempered = log_q / t
            soft = torch.exp(tempered - torch.logaddexp(tempered, _log1mexp(log_q) / t))  # sigmoid(logit(q) / T)
            weight = log_p[:, tree.parents[j]].exp()
        else:
            soft, weight = torch.sigmoid(t_logits[:, j] / t), torch.ones_like(s[:, j])
        total = total + (weight * F.binary_cross_entropy_with_logits(s[:, j] / t, soft, reduction="none")).sum()
    for group in tree.groups:
        index = list(group)
        target = torch.softmax(log_p[:, index] / t, dim=1)  # (B, G)
        kl = F.kl_div(F.log_softmax(s[:, index] / t, dim=1), target, reduction="none").sum(dim=1)
        total = total + (log_p[:, tree.parent_of_group(group)].exp() * kl).sum()
    terms = len(tree.binary_labels()) + len(tree.groups)
    return total / (s.shape[0] * terms) * (t * t)


class DistillationLoss(nn.Module):
    """``alpha * KD(student, teacher, T) + (1 - alpha) * hard_loss(student, targets)``.

    KD is :func:`kd_loss`, or :func:`conditional_kd_loss` for a conditional student (``tree`` given,
    student logits raw conditional ones).

    Args:
        hard_loss: any loss from :func:`build_loss` (or ``(logits, targets) -> scalar`` module).
        temperature: T > 0.
        alpha: weight of the distillation term in [0, 1]; 1 ignores the hard labels.
        tree: the label tree of a conditional student; None for a flat one.
    """

    def __init__(self, hard_loss: nn.Module, temperature: float = 2.0, alpha: float = 0.5,
                 tree: LabelTree | None = None) -> None:
        super().__init__()
        if not callable(hard_loss):
            raise ConfigError(f"distillation: hard_loss must be a loss module, got {hard_loss!r}")
        self.hard_loss = hard_loss  # a submodule, so .to(device) moves its buffers (pos_weight)
        self.temperature = _check_temperature(temperature)
        self.alpha = _number("distillation", "alpha", alpha)
        _require(0 <= self.alpha <= 1, "distillation", "alpha", "in [0, 1]", alpha)
        self.tree = tree

    def kd(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """The KD term alone. Args: student_logits, teacher_logits (B, L). Returns: scalar."""
        if self.tree is None:
            return kd_loss(student_logits, teacher_logits, self.temperature)
        return conditional_kd_loss(student_logits, teacher_logits, self.temperature, self.tree)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        """Args: student_logits, teacher_logits, targets all (B, L). Returns: scalar."""
        soft = self.kd(student_logits, teacher_logits)
        hard = self.hard_loss(student_logits, targets)
        return self.alpha * soft + (1 - self.alpha) * hard

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


def hidden_cosine_loss(student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor],
                       attention_mask: Tensor) -> Tensor:
    """Mean over layer pairs of ``1 - cosine(student, teacher)`` over non-padding tokens.

    Tokens of all sequences in the batch are pooled, so each real token counts once. The
    teacher is a fixed target (detached). Pair the layers (and project the student to the
    teacher's width, if they differ) before calling.

    Args:
        student_hidden: P tensors (B, T, H).
        teacher_hidden: P tensors (B, T, H), paired with ``student_hidden`` by position.
        attention_mask: (B, T), nonzero for real tokens.

    Returns:
        Scalar in [0, 2]; 0 when every student state points where its teacher's does.
    """
    if len(student_hidden) == 0 or len(student_hidden) != len(teacher_hidden):
        raise ValueError(f"hidden_cosine_loss: need the same non-zero number of student and teacher layers, "
                         f"got {len(student_hidden)} and {len(teacher_hidden)}")
    mask = attention_mask.bool()  # (B, T)
    if not mask.any():
        raise ValueError("hidden_cosine_loss: attention_mask has no real tokens")
    losses = []
    for i, (s, t) in enumerate(zip(student_hidden, teacher_hidden, strict=True)):
        if s.shape != t.shape or s.dim() != 3 or s.shape[:2] != mask.shape:
            raise ValueError(f"hidden_cosine_loss: pair {i}: student {tuple(s.shape)} and teacher "
                             f"{tuple(t.shape)} must both be (B, T, H) with mask {tuple(mask.shape)}")
        # Select real tokens before the cosine: padding states can be anything (even zero
        # vectors) and must not reach the loss or its gradient. float32: bf16 cosines are coarse.
        s_tok = s[mask].float()  # (n, H)
        t_tok = t.detach()[mask].float()  # (n, H)
        losses.append(1 - F.cosine_similarity(s_tok, t_tok, dim=-1).mean())
    return torch.stack(losses).mean()
