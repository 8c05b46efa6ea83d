"""`compress train`: fine-tune a teacher with one Accelerate loop.

Recipe, top to bottom: load + split data -> load checkpoint -> tokenize once -> AdamW (no decay
on biases and LayerNorm) with linear warmup/decay -> epochs of length-bucketed batches with
gradient accumulation, clipping and mixed precision -> validation metrics each epoch, early
stopping with patience on ``optim.select_metric`` -> thresholds tuned on validation -> the test
split scored once -> best epoch written as an artifact (atomically) and logged to MLflow.
``resume=True`` continues from the per-epoch checkpoint kept in ``<out>.checkpoint/`` after a crash.

Under a launcher (``torchrun``, ``accelerate launch``) every process runs this recipe and trains its
share of each batch; all check ``--out`` before any work, and only the main one writes the artifact
and the MLflow run (:mod:`compress.distributed`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from compress import data as data_mod
from compress.artifact import ArtifactInfo, atomic_artifact_dir, check_out, write_info
from compress.batching import encode
from compress.config import DataConfig, TrainConfig, to_dict
from compress.distributed import is_main_process, quiet_other_processes, wait_for_everyone
from compress.errors import UserError
from compress.loop import (
    Checkpointing,
    LoopData,
    label_loss_step,
    resumable_checkpoint,
    resume_fingerprint,
    run_loop,
)
from compress.losses import build_conditional_loss, build_loss, pos_weight_from_labels
from compress.metrics import summary
from compress.models.conditional import LabelTree, set_head
from compress.models.teacher import load_teacher
from compress.precision import PrecisionChoice
from compress.precision_probe import training_precision
from compress.tracking import tracked_run

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced and how fast it ran."""

    artifact: Path
    metrics: dict
    best_epoch: int
    epochs_run: int
    wall_time_s: float
    train_examples_per_s: float
    mlflow_run_id: str | None = None
    mixed_precision: str = "no"
    precision_choice: dict | None = None  # PrecisionChoice.record(): what auto chose and why


# ----------------------------------------------------------------------------------------------
# Parts shared with distillation and tuning (the loop itself is compress.loop).


class Splits(NamedTuple):
    """Train, validation and (when there is one) test rows of a data config."""

    train: data_mod.LabeledData
    val: data_mod.LabeledData
    test: data_mod.LabeledData | None


def load_splits(cfg: DataConfig) -> Splits:
    """Train, validation and test sets.

    The test set is a separate file (``test_data``; rows of ``data`` with one of its texts are dropped,
    so train and validation never hold a test text), or ``test_fraction`` of ``data`` held out first
    (:func:`compress.data.train_val_test_split`). Validation is a separate file, or a seeded stratified
    split of the rest.
    """
    def read(path: str) -> data_mod.LabeledData:
        return data_mod.load_dataset(path, format=cfg.format, text_column=cfg.text_column,
                                     label_columns=cfg.label_columns)

    full = read(cfg.data)
    test = data_mod.align_to_schema(read(cfg.test_data), full.schema) if cfg.test_data else None
    if test is not None:
        test_texts = set(test.texts)
        kept = [i for i, t in enumerate(full.texts) if t not in test_texts]
        if len(kept) < len(full):
            log.warning("dropped %d rows of %s whose texts are in the test file %s", len(full) - len(kept),
                        cfg.data, cfg.test_data)
            full = full.subset(kept)
    if cfg.val_data:
        val = data_mod.align_to_schema(read(cfg.val_data), full.schema)
        train, test = (full, test) if test is not None else data_mod.hold_out_test(full, cfg.test_fraction, cfg.seed)
    elif test is not None:
        train, val = data_mod.train_val_split(full, val_fraction=cfg.val_fraction, seed=cfg.seed)
    else:
        train, val, test = data_mod.train_val_test_split(full, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        rng = np.random.default_rng(cfg.seed)
        train = train.subset(np.sort(rng.choice(len(train), cfg.max_train_samples, replace=False)))
    return Splits(train, val, test)


def build_task_loss(name: str, params: dict, pos_weight_rule: str | None, schema, train_labels: np.ndarray,
                    head: str = "flat"):
    """A shared loss with task-derived arguments filled in (hierarchy parents, pos_weight); for a conditional
    head, the masked conditional loss (class-balanced for ``weighted_bce``) over the schema's label tree."""
    if head == "conditional":
        return build_conditional_loss(name, LabelTree.from_schema(schema), train_labels, params, pos_weight_rule)
    kwargs = dict(params)
    if name == "hierarchical" and "parents" not in kwargs:
        kwargs["parents"] = schema.parent_indices()
        if not kwargs["parents"]:
            raise UserError("loss hierarchical needs a label hierarchy, and this data has none; pick another loss")
    if name == "weighted_bce" and "pos_weight" not in kwargs:
        kwargs["pos_weight"] = pos_weight_from_labels(train_labels, pos_weight_rule or "balanced")
    return build_loss(name, **kwargs)


def auto_precision(config: TrainConfig) -> PrecisionChoice:
    """What ``config.optim.mixed_precision`` resolves to for this model, data and batch size (the precision
    :func:`train` would train in), without training: ``bench train-speed`` reports it beside measured epochs."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    train_set = load_splits(config.data).train
    model, tokenizer = load_teacher(config.model, train_set.schema.names, dropout=config.dropout)
    set_head(model, LabelTree.from_schema(train_set.schema) if config.head == "conditional" else None)
    encoded = encode(tokenizer, train_set.texts, config.max_length, train_set.labels)
    loss_fn = build_task_loss(config.loss.name, dict(config.loss.params), config.loss.pos_weight_rule,
                              train_set.schema, train_set.labels, config.head)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return training_precision(config.optim.mixed_precision, model, encoded, config.optim.batch_size,
                              label_loss_step(loss_fn), device)


# ----------------------------------------------------------------------------------------------
# The recipe.


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data`` and write a teacher artifact to ``config.out``."""
    t_start = time.perf_counter()
    quiet_other_processes()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.optim.seed)
    out = check_out(config.out, config.overwrite,
                    inputs=(config.data.data, config.data.val_data, config.data.test_data, config.model))
    ckpt = resumable_checkpoint(out, config.resume)

    train_set, val_set, test_set = load_splits(config.data)
    schema = train_set.schema
    model, tokenizer = load_teacher(config.model, schema.names, dropout=config.dropout)
    # flat: also drops a head record the checkpoint may carry (one of our conditional teachers' model/)
    set_head(model, LabelTree.from_schema(schema) if config.head == "conditional" else None)
    data = LoopData(encode(tokenizer, train_set.texts, config.max_length, train_set.labels),
                    encode(tokenizer, val_set.texts, config.max_length), val_set.labels, schema.names, schema,
                    encode(tokenizer, test_set.texts, config.max_length) if test_set else None,
                    test_set.labels if test_set else None)
    loss_fn = build_task_loss(config.loss.name, dict(config.loss.params), config.loss.pos_weight_rule,
                              schema, train_set.labels, config.head)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = training_precision(config.optim.mixed_precision, model, data.train, config.optim.batch_size,
                                   label_loss_step(loss_fn), device)
    mixed_precision = precision.precision
    recipe = to_dict(config)
    # what must match for a resume: data and recipe, not the resume flag or where we log
    fingerprint = resume_fingerprint(train_set.fingerprint(), recipe, ignore=("resume", "tracking", "overwrite"))
    log.info("train %d rows, validation %d rows, test %d rows, %d labels, mixed precision %s (%s)", len(train_set),
             len(val_set), len(test_set) if test_set else 0, schema.num_labels, mixed_precision, precision.reason)

    with tracked_run(config.tracking.enabled, config.tracking.tracking_uri, config.tracking.experiment,
                     config.tracking.run_name, params=recipe, tags={"stage": "train", "kind": "teacher"}) as tracker:
        result = run_loop(model, data, loss_fn, config.optim, mixed_precision, tracker,
                          Checkpointing(ckpt, config.resume, fingerprint))
        info = ArtifactInfo(
            kind="teacher", architecture="hf", **ArtifactInfo.fields_of(schema),
            thresholds=[float(t) for t in result.thresholds],
            max_length=config.max_length, metrics=result.metrics, data_fingerprint=train_set.fingerprint(),
            recipe=recipe,
            extra={"base_model": config.model, "best_epoch": result.state.best_epoch, "history": result.state.history,
                   "head": config.head,
                   "mixed_precision": mixed_precision, "precision_choice": precision.record(),
                   "train_rows": len(train_set), "val_rows": len(val_set),
                   "test_rows": len(test_set) if test_set else 0, "duplicates_removed": train_set.duplicates_removed,
                   "conflicting_removed": train_set.conflicting_removed},
        )
        if is_main_process():
            with atomic_artifact_dir(out, config.overwrite) as tmp:
                model.save_pretrained(tmp / "model")
                tokenizer.save_pretrained(tmp / "tokenizer")
                write_info(tmp, info)
            shutil.rmtree(ckpt, ignore_errors=True)
        wait_for_everyone()  # every process returns once the artifact is in place
        wall = time.perf_counter() - t_start
        tracker.log_metrics({"wall_time_s": wall, "train_examples_per_s": result.examples_per_s,
                             **summary(result.metrics)})
        tracker.log_artifact_dir(out)
    return TrainResult(out, result.metrics, result.state.best_epoch, result.state.epoch, wall, result.examples_per_s,
                       tracker.run_id, mixed_precision, precision.record())
