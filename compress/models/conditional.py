"""Conditional heads: a child label predicts P(child | parent), the model returns marginal logits.

With a conditional head (``head=conditional``) the model's last ``Linear`` (L outputs) gives raw
*conditional* logits ``z`` (B, L):

* a top-level label: ``P(label) = sigmoid(z)``, as a flat head;
* a plain child: ``P(child | parent) = sigmoid(z_child)``;
* an exclusive sibling group (``LabelSchema.exclusive``): ``P(member | parent) = softmax(z_group)``,
  one softmax over the group. The groups the adapters declare are exhaustive under their parent (a
  targeted OLID tweet has exactly one target, a cyberbullying tweet exactly one type), so the
  softmax has no "none" option; a group of top-level labels has no parent to condition on and is
  refused.

The marginals ``P(child) = P(parent) x P(child | parent)`` (down every level of the hierarchy) are
what the model's forward returns, as *marginal logits* ``logit(P)``: every consumer (predictors,
ONNX and its validation, Triton, ``serve score``, quantization guards, bench) applies a sigmoid as
it does for a flat head and gets marginals, and an exported graph contains the marginalisation. A
child therefore never exceeds its parent, and a group's members sum to at most their parent's
probability, by construction.

The marginals are computed in log space, carrying both ``log P`` and ``log (1 - P)`` down the
hierarchy (``1 - P(c) = (1 - P(p)) + P(p) (1 - P(c | p))``), so they stay finite and exact at
logits of +-1e4 in float32, with ONNX operators only (``Softplus``, ``ReduceLogSumExp``, ``Gather``,
``Concat``, ``Reshape``, ``Max``, ``Abs``).

Training needs the raw conditional logits: inside :func:`conditional_logits` the head returns them
instead (the loop's loss step and distillation use it). The head is the model's own final ``Linear``
swapped for a :class:`ConditionalLinear` holding the same parameters, so the state dict (and a Hugging
Face ``save_pretrained`` directory) is unchanged; the label structure is recorded in the model's
config (HF ``config.json`` attribute ``conditional_head``, or our own ``config.json`` key of the same
name) and :func:`restore_head` puts the head back when the model is loaded. A model without the
record is flat (every artifact made before conditional heads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compress.errors import ArtifactError, ConfigError

RECORD_KEY = "conditional_head"
# The TorchScript ONNX exporter (also under optimum) names nodes by module path, so the marginalisation's
# nodes carry ConditionalLinear's ``marginal`` submodule in theirs: quantization keeps them float.
ONNX_SCOPE = "/marginal/"


@dataclass(frozen=True)
class LabelTree:
    """The label structure a conditional head models, in column indices.

    Attributes:
        num_labels: L.
        parents: child column -> parent column (no cycles).
        groups: exclusive sibling groups (two or more columns sharing one parent).
    """

    num_labels: int
    parents: Mapping[int, int]
    groups: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "parents", {int(c): int(p) for c, p in dict(self.parents).items()})
        object.__setattr__(self, "groups", tuple(tuple(int(i) for i in g) for g in self.groups))
        n = self.num_labels
        columns = [*self.parents, *self.parents.values(), *(i for g in self.groups for i in g)]
        if any(not 0 <= i < n for i in columns):
            raise ConfigError(f"conditional head: label index out of range for {n} labels")
        if not self.parents:
            raise ConfigError("head=conditional needs a label hierarchy, and this data has none; use head=flat")
        for start in self.parents:  # a cycle would never reach a top-level label
            node, steps = start, 0
            while node in self.parents:
                node, steps = self.parents[node], steps + 1
                if steps > n:
                    raise ConfigError("conditional head: the label hierarchy has a cycle")
        seen: set[int] = set()
        for group in self.groups:
            if len(group) < 2 or seen & set(group) or len(set(group)) != len(group):
                raise ConfigError("conditional head: exclusive groups need two or more labels, each in one group")
            seen |= set(group)
            owners = {self.parents.get(i) for i in group}
            if owners == {None}:
                raise ConfigError("head=conditional models an exclusive group under a parent label, and group "
                                  f"{list(group)} is top-level; use head=flat")
            if len(owners) != 1:
                raise ConfigError(f"conditional head: exclusive group {list(group)} mixes parents")

    @classmethod
    def from_schema(cls, schema: Any) -> LabelTree:
        """The tree of a ``compress.data.LabelSchema`` (ConfigError when it has no hierarchy)."""
        return cls(schema.num_labels, schema.parent_indices(), tuple(tuple(g) for g in schema.exclusive_indices()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record: ``{"num_labels", "parents": [[child, parent], ...], "groups": [[...], ...]}``."""
        return {"num_labels": self.num_labels, "parents": [[c, p] for c, p in sorted(self.parents.items())],
                "groups": [list(g) for g in self.groups]}

    @classmethod
    def from_dict(cls, record: Any) -> LabelTree:
        """Inverse of :meth:`to_dict`; ArtifactError (one line) for a damaged record."""
        try:
            return cls(int(record["num_labels"]), {int(c): int(p) for c, p in record["parents"]},
                       tuple(tuple(g) for g in record.get("groups", ())))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ArtifactError(f"the model's {RECORD_KEY} record is damaged ({str(exc)[:80]}); "
                                "re-create the artifact") from None

    def depth(self, label: int) -> int:
        """0 for a top-level label, 1 for its children, ..."""
        d = 0
        while label in self.parents:
            label, d = self.parents[label], d + 1
        return d

    def binary_labels(self) -> list[int]:
        """Columns outside every group: a top-level label or a plain child (a sigmoid each)."""
        grouped = {i for g in self.groups for i in g}
        return [i for i in range(self.num_labels) if i not in grouped]

    def parent_of_group(self, group: Sequence[int]) -> int:
        return self.parents[group[0]]


def _logaddexp(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) + exp(b))`` from ONNX operators (the TorchScript exporter has no ``aten::logaddexp``)."""
    return torch.maximum(a, b) + F.softplus(-(a - b).abs())


class MarginalLogits(nn.Module):
    """Raw conditional logits (B, L) -> marginal logits ``logit(P(label))`` (B, L), float32.

    Top-level plain labels pass through unchanged (their conditional is their marginal). Holds only
    non-persistent index buffers: adds nothing to a state dict.
    """

    def __init__(self, tree: LabelTree) -> None:
        super().__init__()
        self.tree = tree
        n = tree.num_labels
        # conditional log-probabilities: column j of cat([sigmoid part (L), group 0, group 1, ...]) per label
        cond_column = list(range(n))
        offset = n
        for k, group in enumerate(tree.groups):
            size = len(group)
            self.register_buffer(f"group_{k}", torch.tensor(group), persistent=False)
            # row i: positions of the members other than i (G * (G - 1),), for log(1 - softmax_i)
            others = [j for i in range(size) for j in range(size) if j != i]
            self.register_buffer(f"group_{k}_others", torch.tensor(others), persistent=False)
            for position, label in enumerate(group):
                cond_column[label] = offset + position
            offset += size
        self.register_buffer("cond_column", torch.tensor(cond_column), persistent=False)
        # marginals are built level by level; "done" order lists the labels in the order they are built
        levels: dict[int, list[int]] = {}
        for label in range(n):
            levels.setdefault(tree.depth(label), []).append(label)
        done = list(levels[0])
        self.register_buffer("level_0", torch.tensor(done), persistent=False)
        self.num_levels = len(levels)
        for d in range(1, self.num_levels):
            children = levels[d]
            position = {label: i for i, label in enumerate(done)}
            self.register_buffer(f"level_{d}", torch.tensor(children), persistent=False)
            self.register_buffer(f"level_{d}_parents", torch.tensor([position[tree.parents[c]] for c in children]),
                                 persistent=False)
            done += children
        self.register_buffer("label_position", torch.tensor([done.index(j) for j in range(n)]), persistent=False)
        grouped = {i for g in tree.groups for i in g}
        plain_top = [j not in tree.parents and j not in grouped for j in range(n)]
        self.register_buffer("plain_top", torch.tensor([plain_top]), persistent=False)

    def conditional_log_probs(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(log P(label | parent), log (1 - P(label | parent))), each (B, L), from float32 logits (B, L)."""
        log_c, log_not_c = -F.softplus(-z), -F.softplus(z)  # log sigmoid(z), log sigmoid(-z)
        if not self.tree.groups:
            return log_c, log_not_c
        parts_c, parts_not = [log_c], [log_not_c]
        for k, group in enumerate(self.tree.groups):
            zz = z.index_select(1, getattr(self, f"group_{k}"))  # (B, G)
            total = torch.logsumexp(zz, dim=1, keepdim=True)  # (B, 1)
            others = zz.index_select(1, getattr(self, f"group_{k}_others")).reshape(-1, len(group), len(group) - 1)
            others = torch.logsumexp(others, dim=2)  # (B, G): log of the other members' summed exp
            parts_c.append(zz - total)
            parts_not.append(others - total)
        column = self.cond_column
        return torch.cat(parts_c, dim=1).index_select(1, column), torch.cat(parts_not, dim=1).index_select(1, column)

    def forward(self, z: Tensor) -> Tensor:
        """Args: z (B, L) raw conditional logits. Returns: (B, L) float32 marginal logits."""
        z = z.float()
        log_c, log_not_c = self.conditional_log_probs(z)
        top = self.level_0
        log_p, log_not_p = log_c.index_select(1, top), log_not_c.index_select(1, top)  # (B, done)
        for d in range(1, self.num_levels):
            children, parents = getattr(self, f"level_{d}"), getattr(self, f"level_{d}_parents")
            parent_p, parent_not = log_p.index_select(1, parents), log_not_p.index_select(1, parents)
            # P(c) = P(p) P(c|p);  1 - P(c) = (1 - P(p)) + P(p) (1 - P(c|p))
            log_p = torch.cat([log_p, parent_p + log_c.index_select(1, children)], dim=1)
            log_not_p = torch.cat([log_not_p, _logaddexp(parent_not, parent_p + log_not_c.index_select(1, children))],
                                  dim=1)
        marginal = (log_p - log_not_p).index_select(1, self.label_position)
        return torch.where(self.plain_top, z, marginal)


class ConditionalLinear(nn.Linear):
    """A model's final ``Linear`` (L outputs) with the marginalisation after it.

    Same parameters (``weight``, ``bias``) as the ``nn.Linear`` it replaces. ``forward`` returns
    marginal logits (B, L); raw conditional logits while ``emit_conditional`` is set
    (:func:`conditional_logits`).
    """

    def __init__(self, in_features: int, out_features: int, tree: LabelTree, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if tree.num_labels != out_features:
            raise ConfigError(f"conditional head: {tree.num_labels} labels but the layer has {out_features} outputs")
        self.marginal = MarginalLogits(tree)
        self.emit_conditional = False

    @property
    def tree(self) -> LabelTree:
        return self.marginal.tree

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (..., in_features). Returns: (..., L) marginal logits (raw conditional ones when asked)."""
        z = super().forward(x)
        return z if self.emit_conditional else self.marginal(z)


def _final_linear(model: nn.Module, num_labels: int) -> tuple[str, nn.Linear]:
    """(dotted name, module) of the last ``nn.Linear`` with ``num_labels`` outputs: the one making the logits."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise ConfigError(f"head=conditional: {type(model).__name__} has no final linear layer with {num_labels} "
                          "outputs to condition; use head=flat")
    return found[-1]


def head_tree(model: nn.Module) -> LabelTree | None:
    """The tree of ``model``'s conditional head, None for a flat model."""
    return next((m.tree for m in model.modules() if isinstance(m, ConditionalLinear)), None)


def set_head(model: nn.Module, tree: LabelTree | None) -> nn.Module:
    """Give ``model`` a conditional head over ``tree`` (None: make sure it is recorded as flat); returns it.

    The final ``Linear`` is replaced by a :class:`ConditionalLinear` sharing its parameters; a Hugging
    Face model's config records the tree (``config.conditional_head``) so ``save_pretrained`` keeps it.
    """
    config = getattr(model, "config", None)
    if tree is None:
        if config is not None and hasattr(config, RECORD_KEY):
            delattr(config, RECORD_KEY)  # e.g. a DistilBERT student copied a conditional teacher's config
        name, layer = next(((n, m) for n, m in model.named_modules() if isinstance(m, ConditionalLinear)), ("", None))
        if layer is not None:
            _replace(model, name, _plain_linear(layer))
        return model
    name, layer = _final_linear(model, tree.num_labels)
    head = ConditionalLinear(layer.in_features, layer.out_features, tree, bias=layer.bias is not None,
                             device=layer.weight.device, dtype=layer.weight.dtype)
    head.weight, head.bias = layer.weight, layer.bias
    head.train(layer.training)
    _replace(model, name, head)
    if config is not None:
        setattr(config, RECORD_KEY, tree.to_dict())
    return model


def _plain_linear(layer: nn.Linear) -> nn.Linear:
    plain = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None,
                      device=layer.weight.device, dtype=layer.weight.dtype)
    plain.weight, plain.bias = layer.weight, layer.bias
    return plain.train(layer.training)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def restore_head(model: nn.Module, record: Mapping[str, Any] | None) -> nn.Module:
    """Put back the conditional head a loaded model's config records (``None``: a flat model, unchanged)."""
    if record is None:
        return model
    tree = LabelTree.from_dict(record)
    try:
        return set_head(model, tree)
    except ConfigError as exc:
        raise ArtifactError(f"the model's {RECORD_KEY} record does not fit it ({exc}); re-create the artifact") from None


@contextlib.contextmanager
def conditional_logits(model: nn.Module) -> Iterator[bool]:
    """Inside the block a conditional head returns its raw conditional logits (for the training losses).

    Yields whether ``model`` has one; a flat model is unchanged. The head returns marginal logits again
    afterwards, also after an exception.
    """
    heads = [m for m in model.modules() if isinstance(m, ConditionalLinear)]
    for head in heads:
        head.emit_conditional = True
    try:
        yield bool(heads)
    finally:
        for head in heads:
            head.emit_conditional = False
