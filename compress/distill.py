"""`compress distill`: teach a small student from a teacher artifact's soft labels.

Recipe, top to bottom: read the teacher artifact -> load + split the data (the teacher's own data
and split by default), checked against the teacher's labels -> transfer set = labelled training
texts + unlabelled texts + augmented copies (Tang et al. 2019) -> teacher logits over the transfer
set, computed once and cached on disk -> student from the registry (DistilBERT initialised from
the teacher's layers, or TextCNN / BiLSTM on the teacher's tokenizer and embeddings) -> the shared
training loop (:func:`compress.loop.run_loop`) with a multi-label KD objective -> thresholds tuned
on validation -> the teacher's test split scored once -> a ``student`` artifact written atomically and
logged to MLflow. Validation and test texts never enter the transfer set (unlabelled texts among them
are dropped).

Under a launcher (``torchrun``, ``accelerate launch``) every process runs this recipe: the teacher's
soft labels are computed (or read from the cache) once, on the main process, and sent to the others;
each trains its share of each batch; only the main process writes the artifact and the MLflow run.

The objective per row is ``alpha * KD + (1 - alpha) * hard`` (:class:`~compress.losses.DistillationLoss`);
rows without labels (unlabelled and augmented ones) carry only ``alpha * KD``. The teacher is run
per training step only when hidden-state matching (``hidden_weight > 0``) is on. A conditional
student (``head=conditional``; by default the student takes the teacher's head) learns both terms on
its raw conditional logits: the masked conditional loss and the conditional KD objective
(:func:`~compress.losses.conditional_kd_loss`), from a flat or a conditional teacher's marginals.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.cache import cache_root
from compress.config import (
    DataConfig,
    LossConfig,
    OptimConfig,
    TrackingConfig,
    _check,
    build_config,
    check_head,
    merge,
    parse_overrides,
    read_yaml_file,
    recorded_data_values,
    to_dict,
)
from compress.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STUDENT_NAMES = ("distilbert", "textcnn", "bilstm")  # mirrors compress.models.STUDENTS (kept light here)
THRESHOLD_SOURCES = ("validation", "transfer")

# Recipes that work for each student family; config files and key=value overrides win.
STUDENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "distilbert": {"optim": {"lr": 1e-4, "epochs": 5, "batch_size": 32, "patience": 2}},
    "textcnn": {"optim": {"lr": 1e-3, "epochs": 10, "batch_size": 64, "weight_decay": 0.0, "patience": 3,
                          "warmup_ratio": 0.0}},
    "bilstm": {"optim": {"lr": 2e-3, "epochs": 10, "batch_size": 64, "weight_decay": 0.0, "patience": 3,
                         "warmup_ratio": 0.0}},
}


def default_cache_dir() -> Path:
    """``soft_labels/`` under :func:`compress.cache.cache_root` (``~/.cache/modcompress/soft_labels`` by default)."""
    return cache_root() / "soft_labels"


def is_checkpoint_path(student: str) -> bool:
    """A student given as a path (a Hugging Face checkpoint directory) rather than a registry name."""
    return os.sep in student or student.startswith(".") or Path(student).is_dir()


@dataclass(frozen=True)
class DistillConfig:
    """`compress distill`: a student taught by a teacher artifact.

    Attributes:
        teacher: teacher artifact directory.
        student: ``distilbert``, ``textcnn``, ``bilstm``, or an HF checkpoint directory.
        out: student artifact directory to write.
        data: labelled data; None = the teacher's own data config (same split).
        loss: the hard-label loss (any :mod:`compress.losses` name).
        temperature: KD temperature T > 0.
        alpha: weight of the KD term in [0, 1] (0 = hard labels only, 1 = soft labels only).
        unlabeled: extra texts for the transfer set (.txt one per line, or a table column).
        unlabeled_column: the text column of an unlabelled table (detected when None).
        augment: augmented copies per transfer text (0 = none).
        p_mask / p_ng: Tang et al. 2019 word-masking and n-gram-sampling probabilities.
        student_layers: DistilBERT depth (default half the teacher's).
        student_params: builder keyword arguments of own students (``embed_dim``, ``num_filters``...).
        init_embeddings: start own students' embeddings from the teacher's input embeddings.
        freeze_embeddings: keep the student's token-embedding table fixed (much less optimizer work
            on CPU: the table is most of a small student's parameters).
        hidden_weight: weight of hidden-state cosine matching (DistilBERT/HF students), 0 = off.
        head: the student's head, ``flat`` or ``conditional`` (:mod:`compress.models.conditional`);
            None = the teacher's. A conditional student distils with the conditional KD objective.
        max_length: tokenizer truncation; None = the teacher's.
        cache_dir: soft-label cache; None = :func:`default_cache_dir`.
        teacher_batch_size: batch size of the teacher's soft-label pass.
        thresholds_from: where the student's decision thresholds are tuned: ``validation`` (its labels) or
            ``transfer`` (the whole transfer set against the teacher's decisions, its probabilities at its
            own thresholds: many more rows than a small validation split, so rare labels' cuts are less
            noisy). Epoch selection uses validation either way.
    """

    teacher: str = ""
    student: str = ""
    out: str = "runs/student"
    data: DataConfig | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    temperature: float = 2.0
    alpha: float = 0.5
    unlabeled: str | None = None
    unlabeled_column: str | None = None
    augment: int = 0
    p_mask: float = 0.1
    p_ng: float = 0.25
    student_layers: int | None = None
    student_params: Mapping[str, Any] = field(default_factory=dict)
    init_embeddings: bool = True
    freeze_embeddings: bool = False
    hidden_weight: float = 0.0
    head: str | None = None
    max_length: int | None = None
    cache_dir: str | None = None
    teacher_batch_size: int = 128
    thresholds_from: str = "validation"
    resume: bool = False
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _check(bool(self.teacher), "teacher", "is required; pass the teacher artifact directory")
        _check(bool(self.student), "student", f"is required; pass one of {', '.join(STUDENT_NAMES)} "
                                              "or a Hugging Face checkpoint directory")
        _check(self.student in STUDENT_NAMES or is_checkpoint_path(self.student), "student",
               f"unknown student {self.student!r}; known: {', '.join(STUDENT_NAMES)} "
               "(or a Hugging Face checkpoint directory)")
        _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _check(0.0 <= self.alpha <= 1.0, "alpha", f"must be in [0, 1], got {self.alpha}")
        _check(self.augment >= 0, "augment", f"must be >= 0, got {self.augment}")
        _check(0.0 <= self.p_mask <= 1.0, "p_mask", f"must be in [0, 1], got {self.p_mask}")
        _check(0.0 <= self.p_ng <= 1.0, "p_ng", f"must be in [0, 1], got {self.p_ng}")
        _check(self.student_layers is None or self.student_layers >= 1, "student_layers",
               f"must be >= 1, got {self.student_layers}")
        _check(self.hidden_weight >= 0, "hidden_weight", f"must be >= 0, got {self.hidden_weight}")
        check_head(self.head)
        _check(self.max_length is None or 8 <= self.max_length <= 8192, "max_length",
               f"must be in [8, 8192], got {self.max_length}")
        _check(self.teacher_batch_size >= 1, "teacher_batch_size", f"must be >= 1, got {self.teacher_batch_size}")
        _check(self.thresholds_from in THRESHOLD_SOURCES, "thresholds_from",
               f"must be one of {', '.join(THRESHOLD_SOURCES)}, got {self.thresholds_from!r}")
        _check(self.thresholds_from != "transfer" or self.alpha > 0, "thresholds_from",
               "transfer tunes thresholds on the teacher's soft labels, which alpha=0 does not compute; "
               "pass alpha > 0 or thresholds_from=validation")


def student_family(student: str) -> str:
    """``distilbert`` for an HF checkpoint path, else the registry name."""
    return "distilbert" if student not in STUDENT_NAMES else student


def load_distill_config(teacher: str, student: str, path: str | None = None,
                        overrides: Sequence[str] = ()) -> DistillConfig:
    """DistillConfig from student defaults < the teacher's data config < YAML ``path`` < ``overrides``.

    The teacher's data config (file, format, split seed) is inherited unless the YAML file or the
    overrides name ``data.data``, so by default the student sees the teacher's exact split.
    """
    values: dict[str, Any] = {"teacher": teacher, "student": student}
    values = merge(values, STUDENT_DEFAULTS.get(student_family(student), {}))
    user: dict[str, Any] = {}
    if path:
        user = merge(user, read_yaml_file(path))
    user = merge(user, parse_overrides(overrides))
    user_data = user.get("data") if isinstance(user.get("data"), Mapping) else None
    if not (user_data and user_data.get("data")):  # the teacher's data and its train / validation / test split
        inherited = _teacher_data_config(user.get("teacher", teacher))
        if inherited is not None:
            values["data"] = inherited
    return build_config(DistillConfig, merge(values, user))


def _teacher_data_config(teacher: str) -> dict[str, Any] | None:
    """The teacher artifact's recorded ``recipe.data`` (None when unreadable: distill reports why)."""
    try:
        meta = json.loads(Path(teacher, "artifact.json").read_text())
        data = meta.get("recipe", {}).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(data, Mapping) or not data.get("data"):
        return None
    return recorded_data_values(data)


# ----------------------------------------------------------------------------------------------
# Transfer set.


@dataclass
class TransferSet:
    """Texts the student learns from, with hard labels where they exist.

    Attributes:
        texts: N texts (labelled first, then unlabelled, then augmented).
        labels: (N, L) float32 0/1; zero rows where there are no labels.
        has_labels: (N,) bool, True for labelled training rows.
        counts: {"labelled", "unlabeled", "augmented", "total"}.
    """

    texts: list[str]
    labels: np.ndarray
    has_labels: np.ndarray
    counts: dict[str, int]

    def fingerprint(self) -> str:
        """sha256 over texts (length-prefixed) and labels."""
        h = hashlib.sha256()
        for text in self.texts:
            b = text.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        h.update(np.ascontiguousarray(self.labels, dtype=np.uint8).tobytes())
        h.update(np.ascontiguousarray(self.has_labels, dtype=np.uint8).tobytes())
        return h.hexdigest()


def read_unlabeled(path: str | Path, column: str | None = None) -> list[str]:
    """Unlabelled texts: a ``.txt`` file (one per line), or a column of a CSV/TSV/JSONL/Parquet table.

    ``.gz``/``.bz2``/``.xz`` compression is fine. Without ``column`` a table's text column is the first of
    :data:`compress.data.TEXT_COLUMNS` it has (``comment_text``, ``text``, ``tweet``, ``tweet_text``, ...).
    Empty lines are skipped.
    """
    import pandas as pd

    from compress.data import TEXT_COLUMNS

    p = Path(path)
    if not p.is_file():
        raise DataError(f"unlabeled file not found: {p}; pass a .txt file (one text per line) or a CSV column")
    suffixes = [s.lower() for s in p.suffixes if s.lower() not in (".gz", ".bz2", ".xz")]
    kind = suffixes[-1] if suffixes else ".txt"
    try:
        if kind in (".txt", ".text", ""):
            import bz2
            import gzip
            import lzma

            opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(p.suffix.lower(), open)
            with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
                texts = [line.strip() for line in f]
        else:
            if kind in (".csv", ".tsv", ".tab"):
                frame = pd.read_csv(p, sep="," if kind == ".csv" else "\t", dtype=str, keep_default_na=False,
                                    compression="infer", encoding="utf-8")
            elif kind in (".jsonl", ".ndjson", ".json"):
                frame = pd.read_json(p, lines=True, dtype=False, compression="infer")
            elif kind in (".parquet", ".pq"):
                frame = pd.read_parquet(p)
            else:
                raise DataError(f"{p}: unknown unlabeled file type {kind!r}; use .txt (one text per line), "
                                ".csv, .tsv, .jsonl or .parquet")
            columns = [str(c) for c in frame.columns]
            if column is None:
                column = next((c for c in TEXT_COLUMNS if c in columns), None)
                if column is None:
                    raise DataError(f"{p}: no text column found among {', '.join(columns[:8])}; "
                                    "pass unlabeled_column=NAME")
            if column not in columns:
                raise DataError(f"{p}: no column {column!r} (columns: {', '.join(columns[:8])}); "
                                "pass unlabeled_column=NAME")
            texts = [str(t).strip() for t in frame[column].tolist() if t is not None]
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text; re-save it as UTF-8") from None
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read unlabeled file {p} ({' '.join(str(exc).split())[:160]}); "
                        "check the file") from None
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"{p} holds no texts; pass a file with one text per line (or a filled text column)")
    return texts


def augment_text(text: str, rng: np.random.Generator, p_mask: float, p_ng: float, mask_token: str) -> str:
    """One augmented copy of ``text`` (Tang et al. 2019, without POS-guided replacement).

    Each word is replaced by ``mask_token`` with probability ``p_mask``; then, with probability
    ``p_ng``, only a random n-gram (n uniform in 1..5) of the result is kept.
    """
    words = text.split()
    if not words:
        return text
    words = [mask_token if rng.random() < p_mask else w for w in words]
    if rng.random() < p_ng:
        n = int(rng.integers(1, 6))
        if n < len(words):
            start = int(rng.integers(0, len(words) - n + 1))
            words = words[start:start + n]
    return " ".join(words)


def build_transfer_set(texts: Sequence[str], labels: np.ndarray, unlabeled: Sequence[str] = (),
                       augment: int = 0, p_mask: float = 0.1, p_ng: float = 0.25, mask_token: str = "[MASK]",
                       seed: int = 0) -> TransferSet:
    """Labelled rows, then ``unlabeled`` rows, then ``augment`` augmented copies of every one of them.

    Args:
        texts: N_l labelled texts; labels (N_l, L).
        unlabeled: N_u texts without labels.
        augment: copies per text; copies identical to their source are redrawn up to 5 times, then kept.

    Returns:
        A :class:`TransferSet` of N_l + N_u + augment * (N_l + N_u) rows.
    """
    labels = np.asarray(labels, dtype=np.float32)
    base = [*texts, *unlabeled]
    aug: list[str] = []
    rng = np.random.default_rng(seed)
    for _ in range(augment):
        for text in base:
            new = text
            for _try in range(5):
                new = augment_text(text, rng, p_mask, p_ng, mask_token)
                if new != text:
                    break
            aug.append(new)
    n_l, n_u = len(texts), len(unlabeled)
    all_labels = np.zeros((len(base) + len(aug), labels.shape[1]), dtype=np.float32)
    all_labels[:n_l] = labels
    has = np.zeros(len(all_labels), dtype=bool)
    has[:n_l] = True
    counts = {"labelled": n_l, "unlabeled": n_u, "augmented": len(aug), "total": len(all_labels)}
    return TransferSet([*base, *aug], all_labels, has, counts)


def teacher_splits(data: DataConfig, schema: Any) -> tuple[Any, Any, Any, Any]:
    """(label schema, train, validation, test or None) of ``data``, checked against and ordered as the
    teacher's ``schema`` (a ``LabelSchema``)."""
    from compress import data as data_mod
    from compress.train import load_splits

    train, val, test = load_splits(data)
    return (schema, data_mod.align_to_schema(train, schema), data_mod.align_to_schema(val, schema),
            data_mod.align_to_schema(test, schema) if test is not None else None)


def unlabeled_transfer_texts(path: str | Path, column: str | None, held_out: Sequence[str]) -> list[str]:
    """:func:`read_unlabeled`, minus texts that are validation or test texts (``held_out``: they would
    leak into the scores)."""
    unlabeled = read_unlabeled(path, column)
    drop = set(held_out)
    kept = [t for t in unlabeled if t not in drop]
    if len(kept) < len(unlabeled):
        log.info("dropped %d unlabeled texts that are validation or test texts", len(unlabeled) - len(kept))
    return kept


def transfer_set_for(texts: Sequence[str], labels: np.ndarray, unlabeled: Sequence[str], alpha: float,
                     augment: int, p_mask: float, p_ng: float, mask_token: str, seed: int) -> TransferSet:
    """:func:`build_transfer_set`, leaving out unlabelled and augmented rows when ``alpha`` is 0.

    With ``alpha == 0`` (hard labels only) rows without labels would carry no loss.
    """
    transfer = build_transfer_set(texts, labels, unlabeled if alpha > 0 else [], augment if alpha > 0 else 0,
                                  p_mask, p_ng, mask_token, seed)
    if alpha == 0 and (unlabeled or augment):
        log.info("alpha=0 (hard labels only): unlabeled and augmented rows carry no loss and are left out")
    log.info("transfer set: %d labelled + %d unlabeled + %d augmented = %d texts",
             transfer.counts["labelled"], transfer.counts["unlabeled"], transfer.counts["augmented"],
             transfer.counts["total"])
    return transfer


# ----------------------------------------------------------------------------------------------
# Soft-label cache.


def _hash_file(h: Any, path: Path) -> None:
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def teacher_fingerprint(teacher_dir: str | Path) -> str:
    """sha256 over the teacher's ``artifact.json`` and every file of its ``model/`` and ``tokenizer/``."""
    root = Path(teacher_dir)
    h = hashlib.sha256()
    _hash_file(h, root / "artifact.json")
    for sub in ("model", "tokenizer"):
        for path in sorted(p for p in (root / sub).rglob("*") if p.is_file()):
            h.update(str(path.relative_to(root)).encode())
            _hash_file(h, path)
    return h.hexdigest()


def soft_label_key(teacher_fp: str, transfer_fp: str, max_length: int) -> str:
    """Cache key: teacher weights + transfer texts + truncation length."""
    return hashlib.sha256(f"{teacher_fp}:{transfer_fp}:{max_length}:v1".encode()).hexdigest()[:32]


def teacher_logits(teacher, encoded, batch_size: int, device) -> np.ndarray:
    """(N, L) float32 teacher logits over ``encoded`` (fp32: soft labels are the student's targets)."""
    from compress.predict import predict_logits

    return predict_logits(teacher, encoded, batch_size, "no", device, progress=True)


def cached_soft_labels(cache_dir: Path, key: str, num_rows: int, num_labels: int, compute) -> tuple[np.ndarray, bool]:
    """Soft labels for ``key`` from the cache, or ``compute()`` (N, L) and store them atomically.

    Returns:
        ((N, L) float32 logits, whether the cache was hit).
    """
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        try:
            logits = np.load(path, allow_pickle=False)
            if logits.shape == (num_rows, num_labels) and np.isfinite(logits).all():
                log.info("reusing cached soft labels %s", path)
                return logits.astype(np.float32), True
            log.warning("ignoring cached soft labels %s: shape %s, expected %s", path, logits.shape,
                        (num_rows, num_labels))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cached soft labels %s (%s)", path, exc)
    logits = np.asarray(compute(), dtype=np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    with tmp.open("wb") as f:
        np.save(f, logits, allow_pickle=False)
    os.replace(tmp, path)
    log.info("cached soft labels for %d texts in %s", num_rows, path)
    return logits, False


@dataclass
class SoftLabels:
    """The teacher's view of the transfer set.

    Attributes:
        logits: (N, L) float32 teacher logits (zeros when not needed).
        key: soft-label cache key (teacher files + transfer texts + truncation).
        cache_hit: whether they came from the cache.
        encoded: the transfer texts in the teacher's tokenization.
    """

    logits: np.ndarray
    key: str
    cache_hit: bool
    encoded: Any


def teacher_soft_labels(teacher, teacher_dir: Path, tokenizer, transfer: TransferSet, max_length: int, needed: bool,
                        cache_dir: Path, batch_size: int, device) -> SoftLabels:
    """Teacher logits over the transfer set, through the cache; the teacher is moved to ``device``.

    When not ``needed`` (the KD term has weight 0) the teacher is not run: zeros, no cache hit. Under a
    launcher the main process alone runs the teacher (or reads the cache) and sends the logits to the others.
    """
    from compress.batching import encode
    from compress.distributed import computed_on_main

    encoded = encode(tokenizer, transfer.texts, max_length)
    teacher.to(device)
    key = soft_label_key(teacher_fingerprint(teacher_dir), transfer.fingerprint(), max_length)
    num_labels = transfer.labels.shape[1]
    if not needed:
        return SoftLabels(np.zeros((len(transfer.texts), num_labels), dtype=np.float32), key, False, encoded)
    logits, hit = computed_on_main(lambda: cached_soft_labels(
        cache_dir, key, len(transfer.texts), num_labels, lambda: teacher_logits(teacher, encoded, batch_size, device)))
    return SoftLabels(logits, key, hit, encoded)


# ----------------------------------------------------------------------------------------------
# Objective.


def teacher_decisions(logits: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(N, L) 0/1 decisions of the teacher: sigmoid of its (N, L) ``logits`` at its (L,) ``thresholds``
    (0.5 where the artifact records none). A conditional teacher's logits are marginal, as its thresholds."""
    from compress.predict import sigmoid  # the probabilities the teacher's thresholds were tuned on

    cuts = np.asarray(thresholds, dtype=np.float64) if len(thresholds) else np.full(logits.shape[1], 0.5)
    return (sigmoid(logits) >= cuts).astype(np.float32)


def masked_distillation_loss(student_logits, teacher_logits, targets, has_labels, loss):
    """Batch mean of ``alpha * KD + (1 - alpha) * hard`` on labelled rows and ``alpha * KD`` on the rest.

    Args:
        student_logits / teacher_logits / targets: (B, L) (a conditional student's raw conditional logits).
        has_labels: (B,) bool.
        loss: a :class:`~compress.losses.DistillationLoss` (its hard loss is a mean over elements).

    Returns:
        Scalar: rows weighted equally, ``(n_l * DL(labelled) + n_u * alpha * KD(unlabelled)) / B``.
    """
    b = student_logits.shape[0]
    has = has_labels.bool()
    n_l = int(has.sum())
    total = student_logits.new_zeros(())
    if n_l:
        total = total + n_l * loss(student_logits[has], teacher_logits[has], targets[has])
    if n_l < b:
        rest = ~has
        total = total + (b - n_l) * loss.alpha * loss.kd(student_logits[rest], teacher_logits[rest])
    return total / b


def kd_step_loss(kd, soft: np.ndarray, has_labels: np.ndarray, device, teacher=None,
                 pairs: Sequence[tuple[int, int]] = (), hidden_weight: float = 0.0) -> Callable:
    """The loop's ``step_loss(student, batch)``: the masked KD objective on each batch's rows (on a
    conditional student's raw conditional logits).

    Args:
        kd: a :class:`~compress.losses.DistillationLoss`.
        soft: (N, L) teacher logits of the transfer set; rows picked by ``batch["index"]``.
        has_labels: (N,) bool, True for rows with hard labels.
        teacher: run per step for hidden-state matching (with ``pairs`` of (student, teacher) layers
            and ``hidden_weight``); None = logits only.
    """
    import torch

    from compress.losses import hidden_cosine_loss
    from compress.models.conditional import conditional_logits
    from compress.predict import logits_of

    soft_t = torch.from_numpy(soft)
    has_t = torch.from_numpy(has_labels)

    def step_loss(student, batch):
        index = batch["index"].cpu()
        t_logits, has = soft_t[index].to(device), has_t[index].to(device)
        if teacher is None:
            with conditional_logits(student):
                logits = logits_of(student, batch).float()
            return masked_distillation_loss(logits, t_logits, batch["labels"], has, kd)
        with conditional_logits(student):
            out_s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True)
        with torch.no_grad():
            out_t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True)
        loss = masked_distillation_loss(out_s.logits.float(), t_logits, batch["labels"], has, kd)
        match = hidden_cosine_loss([out_s.hidden_states[s] for s, _ in pairs],
                                   [out_t.hidden_states[t] for _, t in pairs], batch["attention_mask"])
        return loss + hidden_weight * match

    return step_loss


# ----------------------------------------------------------------------------------------------
# Students.


def make_student(student: str, teacher, teacher_tokenizer, labels: Sequence[str], student_layers: int | None,
                 student_params: Mapping[str, Any], init_embeddings: bool):
    """Build the student.

    Returns:
        (model in train mode, architecture name for artifact.json, builder params for the record,
        tokenizer the student reads).
    """
    from compress import models

    if is_checkpoint_path(student) and student not in models.STUDENTS:
        from compress.models.teacher import load_teacher

        model, tokenizer = load_teacher(student, labels)
        return model.train(), "distilbert", {"checkpoint": str(student)}, tokenizer
    if student not in models.STUDENTS:
        raise ConfigError(f"student: unknown student {student!r}; known: {', '.join(models.STUDENTS)} "
                          "(or a Hugging Face checkpoint directory)")
    if student in models.FROM_TEACHER:
        if student_params:
            raise ConfigError(f"student_params: {student} takes no builder parameters; use student_layers")
        try:
            model = models.STUDENTS[student](teacher, student_layers)
        except ValueError as exc:
            raise ConfigError(f"student_layers: {exc}") from None
        params = {"student_layers": int(model.config.num_hidden_layers),
                  "teacher_layers": int(teacher.config.num_hidden_layers)}
        return model, student, params, teacher_tokenizer
    student_params = models.parse_params(student_params)
    builder = models.STUDENTS[student]
    accepted = set(inspect.signature(builder).parameters) - {"num_labels"}
    unknown = sorted(set(student_params) - accepted)
    if unknown:
        raise ConfigError(f"student_params.{unknown[0]}: unknown parameter of {student}; "
                          f"accepted: {', '.join(sorted(accepted - {'vocab_size', 'pad_id'}))}")
    table = teacher.get_input_embeddings().weight  # (V, H)
    pad = teacher_tokenizer.pad_token_id
    params: dict[str, Any] = {"vocab_size": int(table.shape[0]), "pad_id": int(pad if pad is not None else 0)}
    if "embed_dim" in accepted:
        params["embed_dim"] = int(table.shape[1]) if init_embeddings else 128
    params.update(student_params)
    if "widths" in params:
        widths = params["widths"]
        params["widths"] = [int(w) for w in (widths if isinstance(widths, (list, tuple)) else [widths])]
    try:
        model = builder(num_labels=len(labels), **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"student_params: {student} cannot be built from {dict(student_params)} ({exc})") from None
    if init_embeddings and hasattr(model, "embedding"):
        from compress.models.textcnn import init_embeddings_from

        init_embeddings_from(model, table)
    return model.train(), student, params, teacher_tokenizer


@dataclass
class Student:
    """A student ready to train.

    Attributes:
        model: in train mode.
        architecture: registry name recorded in artifact.json.
        params: builder parameters, for the record and for reloading own students.
        tokenizer: the tokenizer it reads (the teacher's, except for HF checkpoints).
    """

    model: Any
    architecture: str
    params: dict[str, Any]
    tokenizer: Any


def build_student(student: str, teacher, teacher_tokenizer, labels: Sequence[str], *, student_layers: int | None,
                  student_params: Mapping[str, Any], init_embeddings: bool, freeze_embeddings: bool,
                  match_hidden: bool, tree=None) -> Student:
    """:func:`make_student` with a conditional head over ``tree`` (a ``LabelTree``; None: flat), its token
    embeddings frozen if asked, checked for hidden-state matching."""
    from compress.models.conditional import set_head

    model, architecture, params, tokenizer = make_student(student, teacher, teacher_tokenizer, labels,
                                                          student_layers, student_params, init_embeddings)
    set_head(model, tree)
    if freeze_embeddings:  # the table is most of a small student's parameters
        table = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.embedding
        table.weight.requires_grad_(False)
    if match_hidden:
        if not hasattr(model, "config") or tokenizer is not teacher_tokenizer:
            raise ConfigError("hidden_weight: hidden-state matching needs the distilbert student (built from "
                              "the teacher); set hidden_weight=0 for this student")
        if model.config.hidden_size != teacher.config.hidden_size:
            raise ConfigError("hidden_weight: student and teacher hidden sizes differ; set hidden_weight=0")
    return Student(model, architecture, params, tokenizer)


def student_encoding(tokenizer, teacher_tokenizer, teacher_encoded, transfer: TransferSet, max_length: int):
    """The transfer set as the student reads it, with its (N, L) hard targets.

    A student on the teacher's tokenizer reuses the teacher's encoding instead of tokenizing again.
    """
    from compress.batching import Encoded, encode

    enc = teacher_encoded if tokenizer is teacher_tokenizer else encode(tokenizer, transfer.texts, max_length)
    return Encoded(enc.input_ids, transfer.labels, enc.pad_id)


def write_student_artifact(out: Path, info, student: Student, tokenizer_from: Path | None,
                           overwrite: bool = False) -> None:
    """Write the student atomically: ``model/`` (HF or own format), ``tokenizer/``, ``artifact.json``.

    ``tokenizer_from``: an artifact whose ``tokenizer/`` is copied (the teacher's, when shared).
    """
    from compress.artifact import atomic_artifact_dir, copy_artifact_files, write_info
    from compress.models import save_own_model

    with atomic_artifact_dir(out, overwrite) as tmp:
        if student.architecture == "distilbert":
            student.model.save_pretrained(tmp / "model")
        else:
            save_own_model(student.model, tmp / "model", student.architecture, student.params, len(info.labels))
        if tokenizer_from is not None:
            copy_artifact_files(tokenizer_from, tmp, ["tokenizer"])
        else:
            student.tokenizer.save_pretrained(tmp / "tokenizer")
        write_info(tmp, info)


# ----------------------------------------------------------------------------------------------
# The recipe.


@dataclass
class DistillResult:
    """What a distillation run produced."""

    artifact: Path
    metrics: dict
    best_epoch: int
    epochs_run: int
    wall_time_s: float
    train_examples_per_s: float
    num_parameters: int
    transfer: dict[str, int]
    cache_hit: bool
    cache_key: str
    mlflow_run_id: str | None = None
    model: Any = field(default=None, repr=False)
    mixed_precision: str = "no"
    precision_choice: dict | None = None  # PrecisionChoice.record(): what auto chose and why


def distill(config: DistillConfig) -> DistillResult:
    """Distil ``config.teacher`` into ``config.student`` and write a student artifact to ``config.out``."""
    import torch

    from compress.artifact import ArtifactInfo, check_out, read_info
    from compress.batching import encode
    from compress.distributed import is_main_process, quiet_other_processes, wait_for_everyone
    from compress.loop import Checkpointing, LoopData, resumable_checkpoint, resume_fingerprint, run_loop
    from compress.losses import DistillationLoss
    from compress.metrics import summary
    from compress.models import load_model, num_parameters
    from compress.models.conditional import LabelTree, head_tree
    from compress.models.distilbert import hidden_state_pairs
    from compress.precision_probe import training_precision
    from compress.tracking import tracked_run
    from compress.train import build_task_loss

    t_start = time.perf_counter()
    quiet_other_processes()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.optim.seed)
    teacher_dir = Path(config.teacher)
    data_files = (config.data.data, config.data.val_data, config.data.test_data) if config.data else ()
    out = check_out(config.out, config.overwrite, inputs=(teacher_dir, config.unlabeled, *data_files))
    info = read_info(teacher_dir, kinds=["teacher"])
    ckpt = resumable_checkpoint(out, config.resume)
    if config.data is None:
        raise ConfigError(f"data: {teacher_dir} does not record its training data; pass --data PATH")
    max_length = config.max_length or info.max_length
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # -- data, checked against the teacher's labels
    schema, train_set, val_set, test_set = teacher_splits(config.data, info.schema())
    held_out = [*val_set.texts, *(test_set.texts if test_set else [])]
    unlabeled = (unlabeled_transfer_texts(config.unlabeled, config.unlabeled_column, held_out)
                 if config.unlabeled else [])

    # -- models
    teacher, teacher_tok = load_model(teacher_dir)
    teacher_head = "flat" if head_tree(teacher) is None else "conditional"
    head = config.head or teacher_head
    tree = LabelTree.from_schema(schema) if head == "conditional" else None
    hidden = config.hidden_weight > 0
    student = build_student(config.student, teacher, teacher_tok, schema.names, student_layers=config.student_layers,
                            student_params=config.student_params, init_embeddings=config.init_embeddings,
                            freeze_embeddings=config.freeze_embeddings, match_hidden=hidden, tree=tree)

    # -- transfer set and the teacher's soft labels (cached)
    transfer = transfer_set_for(train_set.texts, train_set.labels, unlabeled, config.alpha, config.augment,
                                config.p_mask, config.p_ng, teacher_tok.mask_token or teacher_tok.unk_token or "[UNK]",
                                config.optim.seed)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    soft = teacher_soft_labels(teacher, teacher_dir, teacher_tok, transfer, max_length, config.alpha > 0, cache_dir,
                               config.teacher_batch_size, device)
    pairs = hidden_state_pairs(teacher.config.num_hidden_layers, student.model.config.num_hidden_layers) \
        if hidden else []
    if not hidden:
        teacher = None  # not run per step: free it
    train_encoded = student_encoding(student.tokenizer, teacher_tok, soft.encoded, transfer, max_length)
    data = LoopData(train_encoded, encode(student.tokenizer, val_set.texts, max_length), val_set.labels,
                    schema.names, schema, encode(student.tokenizer, test_set.texts, max_length) if test_set else None,
                    test_set.labels if test_set else None,
                    *((train_encoded, teacher_decisions(soft.logits, info.thresholds))
                      if config.thresholds_from == "transfer" else ()))

    # -- objective
    hard_loss = build_task_loss(config.loss.name, dict(config.loss.params), config.loss.pos_weight_rule, schema,
                                train_set.labels, head)
    kd = DistillationLoss(hard_loss, config.temperature, config.alpha, tree).to(device)
    step_loss = kd_step_loss(kd, soft.logits, transfer.has_labels, device, teacher, pairs, config.hidden_weight)

    # -- train, then write the best epoch
    precision = training_precision(config.optim.mixed_precision, student.model, data.train, config.optim.batch_size,
                                   step_loss, device)
    mixed_precision = precision.precision
    recipe = to_dict(config)
    recipe.update({"max_length": max_length, "student_params": student.params, "architecture": student.architecture,
                   "cache_dir": str(cache_dir), "head": head})
    fingerprint = resume_fingerprint(soft.key, recipe, ignore=("resume", "tracking", "cache_dir"))
    n_params = num_parameters(student.model)
    log.info("student %s: %s parameters; teacher %s; mixed precision %s (%s)", student.architecture, f"{n_params:,}",
             teacher_dir, mixed_precision, precision.reason)
    with tracked_run(config.tracking.enabled, config.tracking.tracking_uri, config.tracking.experiment,
                     config.tracking.run_name, params=recipe,
                     tags={"stage": "distill", "kind": "student", "student": student.architecture}) as tracker:
        result = run_loop(student.model, data, kd, config.optim, mixed_precision, tracker,
                          Checkpointing(ckpt, config.resume, fingerprint), step_loss=step_loss)
        student.model.eval()
        info_out = ArtifactInfo(
            kind="student", architecture=student.architecture, **ArtifactInfo.fields_of(schema),
            thresholds=[float(t) for t in result.thresholds],
            max_length=max_length, parent=str(teacher_dir.resolve()), metrics=result.metrics,
            data_fingerprint=train_set.fingerprint(), recipe=recipe,
            extra={"num_parameters": n_params, "soft_label_cache_key": soft.key if config.alpha > 0 else None,
                   "soft_label_cache_hit": soft.cache_hit, "transfer": transfer.counts,
                   "best_epoch": result.state.best_epoch, "history": result.state.history,
                   "teacher_metrics": summary(info.metrics) if info.metrics else {},
                   "head": head, "kd": head, "teacher_head": teacher_head,
                   "thresholds_from": config.thresholds_from,
                   "mixed_precision": mixed_precision, "precision_choice": precision.record(),
                   "train_rows": len(train_set), "val_rows": len(val_set),
                   "test_rows": len(test_set) if test_set else 0},
        )
        if is_main_process():
            write_student_artifact(out, info_out, student,
                                   tokenizer_from=teacher_dir if student.tokenizer is teacher_tok else None,
                                   overwrite=config.overwrite)
            shutil.rmtree(ckpt, ignore_errors=True)
        wait_for_everyone()  # every process returns once the artifact is in place
        wall = time.perf_counter() - t_start
        tracker.log_metrics({"wall_time_s": wall, "train_examples_per_s": result.examples_per_s,
                             "num_parameters": n_params, **summary(result.metrics)})
        tracker.log_artifact_dir(out)
    log.info("student written to %s: val macro ROC-AUC %.4f, macro-F1 %.4f", out, result.metrics["macro_roc_auc"],
             result.metrics["macro_f1"])
    return DistillResult(out, result.metrics, result.state.best_epoch, result.state.epoch, wall,
                         result.examples_per_s, n_params, transfer.counts, soft.cache_hit, soft.key, tracker.run_id,
                         student.model, mixed_precision, precision.record())
