"""The Accelerate training loop shared by teachers, students and baselines (a part, not a recipe).

``run_loop`` runs epochs of length-bucketed batches with gradient accumulation, clipping and
mixed precision, evaluates validation metrics after each epoch (thresholds tuned on validation first),
stops early with patience on ``optim.select_metric`` (macro ROC-AUC by default), keeps the best epoch's
weights and thresholds, and checkpoints each epoch for ``--resume``. A test set, when given, is scored
once at the end, at the best epoch's thresholds (:func:`score_held_out`).
Under a launcher every process runs it on its slice of each (global) batch, predicts its shard of
the validation set, and decides on the gathered metrics, so all processes stop at the same epoch.
Recipes (``compress.train``, ``compress.distill``, the fastText baseline) build the model, data
and loss, then call it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.batching import Encoded, bucketed_batches, collate
from compress.config import OptimConfig
from compress.errors import UserError, one_line
from compress.hierarchy_metrics import level_cuts_of
from compress.metrics import multilabel_metrics, summary, tune_thresholds
from compress.models.conditional import conditional_logits
from compress.predict import logits_of, predict_logits, sigmoid

log = logging.getLogger(__name__)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and normalisation weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_norm = "norm" in name.lower() or param.ndim == 1
        (no_decay if name.endswith(".bias") or is_norm else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, using PyTorch's fused kernel where it exists.

    The fused kernel updates all parameters in one pass instead of a Python loop over tensors;
    on a 2-core CPU that cuts the MiniLM optimizer step from about a fifth of a training step to a
    few percent. Same update rule, so recipes and checkpoints do not change.
    """
    groups = param_groups(model, weight_decay)
    params = [p for group in groups for p in group["params"]]
    fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def predicted_probs(model, encoded: Encoded, num_labels: int, batch_size: int, mixed_precision: str, device,
                    accelerator=None) -> np.ndarray:
    """(N, L) probabilities over ``encoded``.

    With an ``accelerator`` of several processes each predicts its shard and the logits are gathered
    (:func:`sharded_logits`), so every process holds all N rows.
    """
    if accelerator is not None and accelerator.num_processes > 1:
        logits = sharded_logits(accelerator, model, encoded, num_labels, batch_size, mixed_precision)
    else:
        logits = predict_logits(model, encoded, batch_size, mixed_precision, device)
    return sigmoid(logits)


def evaluate(model, encoded: Encoded, labels: np.ndarray, names, batch_size: int, mixed_precision: str,
             device, accelerator=None, schema=None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Validation metrics at thresholds tuned on this set; returns (metrics, thresholds, probs (N, L)).

    Every process computes the same metrics over all N rows (:func:`predicted_probs`). With the label
    ``schema`` the metrics include the per-level ones (``level_macro_f1``), at the same tuned thresholds.
    """
    probs = predicted_probs(model, encoded, labels.shape[1], batch_size, mixed_precision, device, accelerator)
    thresholds = tune_thresholds(labels, probs)
    return multilabel_metrics(labels, probs, names, thresholds, schema), thresholds, probs


def score_held_out(model, encoded: Encoded, labels: np.ndarray, names, thresholds: np.ndarray, batch_size: int,
                   device, accelerator=None, schema=None, level_cuts: dict[str, float] | None = None) -> dict:
    """Metrics of a held-out (test) set at the given thresholds and validation ``level_cuts``
    (:func:`compress.hierarchy_metrics.level_cuts_of`): nothing is tuned or chosen on it."""
    probs = predicted_probs(model, encoded, labels.shape[1], batch_size, "no", device, accelerator)
    return multilabel_metrics(labels, probs, names, thresholds, schema, {} if level_cuts is None else level_cuts)


def sharded_logits(accelerator, model, encoded: Encoded, num_labels: int, batch_size: int,
                   mixed_precision: str) -> np.ndarray:
    """(N, L) logits over ``encoded``: process r predicts rows r, r + world, ... and all are gathered.

    Shards differ in size by at most one row; each is padded to the same size with row index -1 (the
    gather needs equal shapes), and the gathered (index, logits) pairs are put back in row order.
    """
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    n = len(encoded)
    index = np.arange(rank, n, world)
    shard = Encoded([encoded.input_ids[i] for i in index], None, encoded.pad_id)
    logits = predict_logits(model, shard, batch_size, mixed_precision, device) if len(index) else None
    per = -(-n // world)
    padded = torch.zeros(per, num_labels, dtype=torch.float32)
    rows = torch.full((per,), -1, dtype=torch.int64)
    if logits is not None:
        padded[: len(index)] = torch.from_numpy(np.asarray(logits, dtype=np.float32))
        rows[: len(index)] = torch.from_numpy(index)
    all_logits = accelerator.gather(padded.to(device)).cpu().numpy()  # (world * per, L)
    all_rows = accelerator.gather(rows.to(device)).cpu().numpy()  # (world * per,)
    out = np.empty((n, num_labels), dtype=np.float32)
    kept = all_rows >= 0
    out[all_rows[kept]] = all_logits[kept]
    return out


@contextlib.contextmanager
def own_forward(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` running its own forward inside the block, not the autocast wrapper Accelerate puts on it
    for bf16 / fp16 training; the wrapper is put back afterwards.

    Validation runs this way, in fp32: the precision the artifact is served in (``export.runtime``'s
    torch backend and every export), so the metrics, the tuned thresholds and early stopping describe
    the model users get, whatever precision it trained in.
    """
    original = model.__dict__.get("_original_forward")
    wrapped = model.__dict__.get("forward")
    if original is None or wrapped is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, rank: int, world: int) -> list[np.ndarray]:
    """This process's share of one epoch's bucketed batches: rows ``rank, rank + world, ...`` of each.

    ``batch_size`` is the global batch. Every process takes its slice of every batch, so a step trains
    on the same rows however many processes share it (DDP averages the per-process mean losses'
    gradients), and the number of updates, the schedule and the metrics match a single-process run.
    A batch with fewer rows than processes (a small last one) is left out, so no process gets an empty
    one and all get the same count.
    """
    batches = bucketed_batches(lengths, batch_size, shuffle=True, seed=seed)
    if world == 1:
        return batches
    return [batch[rank::world] for batch in batches if len(batch) >= world]


@dataclass
class LoopState:
    """Everything needed to resume: epochs done, best score, patience counter, history."""

    epoch: int = 0
    step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list | None = None


@dataclass
class BestEpoch:
    """The best epoch so far: its weights (CPU copies), validation metrics and tuned thresholds (L,)."""

    weights: dict | None
    metrics: dict
    thresholds: np.ndarray


@dataclass(frozen=True)
class LoopData:
    """What the loop trains and validates on.

    Attributes:
        train: encoded training rows, with their (N, L) targets.
        val: encoded validation rows.
        val_labels: (N_val, L) 0/1 validation labels.
        label_names: the L label names, in column order.
        schema: their ``LabelSchema`` (hierarchy, exclusive groups) for the per-level metrics; None = flat.
        test / test_labels: encoded test rows and their (N_test, L) labels, scored once after training;
            None = no test set.
        tune_on / tune_targets: encoded rows and their (N_t, L) 0/1 targets on which the best epoch's final
            thresholds are tuned instead of on validation (``compress distill --thresholds-from transfer``:
            the transfer set against the teacher's decisions); None = validation. Epoch selection still
            uses validation-tuned thresholds; the final validation and test metrics are at the final ones.
    """

    train: Encoded
    val: Encoded
    val_labels: np.ndarray
    label_names: Sequence[str]
    schema: Any = None
    test: Encoded | None = None
    test_labels: np.ndarray | None = None
    tune_on: Encoded | None = None
    tune_targets: np.ndarray | None = None


@dataclass(frozen=True)
class Checkpointing:
    """Where the per-epoch checkpoint lives and what a resume must match.

    Attributes:
        directory: ``<out>.checkpoint`` (:func:`checkpoint_dir`), replaced after each epoch.
        resume: continue from ``directory`` instead of starting fresh.
        fingerprint: data + recipe (:func:`resume_fingerprint`); a checkpoint made with another is refused.
    """

    directory: Path
    resume: bool
    fingerprint: str


@dataclass
class LoopResult:
    """What :func:`run_loop` returns.

    Attributes:
        state: epochs run, best epoch and per-epoch history.
        metrics / thresholds: the best epoch's validation metrics and (L,) tuned thresholds; ``metrics["test"]``
            holds the test set's metrics (same keys) when there is one.
        train_seconds / examples_seen: time spent in training steps (not validation) and rows trained on.
    """

    state: LoopState
    metrics: dict
    thresholds: np.ndarray
    train_seconds: float
    examples_seen: int

    @property
    def examples_per_s(self) -> float:
        """Training throughput (0 when no step ran)."""
        return self.examples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".checkpoint")


def resumable_checkpoint(out: str | Path, resume: bool) -> Path:
    """:func:`checkpoint_dir` of ``out``; with ``resume`` it must exist (UserError otherwise)."""
    ckpt = checkpoint_dir(out)
    if resume and not ckpt.is_dir():
        raise UserError(f"nothing to resume: {ckpt} does not exist; run again without --resume")
    return ckpt


def resume_fingerprint(data_key: str, recipe: dict, ignore: Sequence[str]) -> str:
    """sha256 over ``data_key`` and ``recipe`` without the keys in ``ignore`` (what may differ on resume)."""
    resumable = {k: v for k, v in recipe.items() if k not in ignore}
    return hashlib.sha256((data_key + json.dumps(resumable, sort_keys=True, default=str)).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Parts of the loop.


def fresh_accelerator(mixed_precision: str, grad_accum: int):
    """An ``accelerate.Accelerator`` for this loop alone.

    Accelerate keeps process-wide state; a second loop in one process (tuning trials, tests)
    may use another precision. Resetting keeps the distributed set-up (PartialState) intact.
    ``split_batches``: each batch is split across processes (:func:`epoch_batches`), so the scheduler
    steps once per update, as in a single process (without it Accelerate steps it once per process).
    """
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum,
                       cpu=not torch.cuda.is_available(),
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def total_updates(batches_per_epoch: int, grad_accum: int, epochs: int, max_steps: int | None) -> int:
    """Optimizer updates the schedule spans: whole epochs, capped by ``max_steps``."""
    total = max(1, batches_per_epoch // grad_accum) * epochs
    return min(total, max_steps) if max_steps else total


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_ratio: float, updates: int):
    """Linear warmup over ``warmup_ratio`` of ``updates``, then linear decay to zero."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * updates), updates)


def label_loss_step(loss_fn) -> Callable:
    """The default ``step_loss``: ``loss_fn(logits (B, L) as fp32, batch labels (B, L))``; a conditional head
    gives its raw conditional logits here (:func:`compress.models.conditional.conditional_logits`)."""

    def step_loss(m, b):
        with conditional_logits(m):
            return loss_fn(logits_of(m, b).float(), b["labels"])

    return step_loss


def step_limit_reached(step: int, max_steps: int | None) -> bool:
    return bool(max_steps and step >= max_steps)


def train_epoch(accelerator, model, optimizer, scheduler, step_loss: Callable, train: Encoded,
                batches: list[np.ndarray], state: LoopState, max_grad_norm: float, max_steps: int | None,
                desc: str) -> tuple[float, int]:
    """One pass over ``batches`` (gradient accumulation, clipping); counts updates in ``state.step``.

    Stops early once ``max_steps`` updates are done. Returns (mean training loss, rows trained on).
    """
    from tqdm.auto import tqdm

    device = accelerator.device
    model.train()
    running, count, seen = 0.0, 0, 0
    bar = tqdm(batches, desc=desc, disable=not accelerator.is_local_main_process)
    for idx in bar:
        batch = {k: v.to(device) for k, v in collate(train, idx).items()}
        with accelerator.accumulate(model):
            loss = step_loss(model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            state.step += 1
        running += float(loss.detach())
        count += 1
        seen += len(idx)
        if count % 20 == 0:
            bar.set_postfix(loss=f"{running / count:.4f}")
        if step_limit_reached(state.step, max_steps):
            break
    bar.close()
    return running / max(count, 1), seen


def selection_score(metrics: dict, select_metric: str = "macro_roc_auc") -> float:
    """Validation ``select_metric`` (``macro_roc_auc`` or ``level_macro_f1``, see ``OptimConfig``), or
    macro-F1 where it is undefined (no label has an AUC, no level has rows)."""
    score = float(metrics.get(select_metric, float("nan")))
    return score if np.isfinite(score) else metrics["macro_f1"]


def keep_if_best(state: LoopState, best: BestEpoch, model: torch.nn.Module, epoch: int, metrics: dict,
                 thresholds: np.ndarray, select_metric: str = "macro_roc_auc") -> bool:
    """Record ``epoch`` in ``best`` (weights copied to the CPU) when it beats the best so far on
    ``select_metric``, else count a bad epoch for patience. Returns whether it improved."""
    score = selection_score(metrics, select_metric)
    if not score > state.best_metric:
        state.bad_epochs += 1
        return False
    state.best_metric, state.best_epoch, state.bad_epochs = score, epoch, 0
    best.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    best.metrics, best.thresholds = metrics, thresholds
    return True


def log_epoch(state: LoopState, tracker, epoch: int, train_loss: float, metrics: dict, improved: bool) -> None:
    """Append the epoch's record to ``state.history``, send it to the tracker and log one line."""
    record = {"epoch": epoch, "train_loss": train_loss, **summary(metrics)}
    state.history.append(record)
    tracker.log_metrics(record, step=epoch)
    levels = f"  level macro-F1 {metrics['level_macro_f1']:.4f}" if "level_macro_f1" in metrics else ""
    log.info("epoch %d: loss %.4f  val macro ROC-AUC %.4f  macro-F1 %.4f%s%s", epoch, record["train_loss"],
             metrics["macro_roc_auc"], metrics["macro_f1"], levels, "  (best)" if improved else "")


# ----------------------------------------------------------------------------------------------
# The loop.


def run_loop(
    model: torch.nn.Module,
    data: LoopData,
    loss_fn,
    optim: OptimConfig,
    mixed_precision: str,
    tracker,
    checkpointing: Checkpointing,
    step_loss: Callable | None = None,
) -> LoopResult:
    """The Accelerate training loop shared by teachers and students.

    ``step_loss(model, batch) -> loss`` replaces the default ``loss_fn(logits, labels)`` (used
    by distillation). The best epoch's weights are loaded into ``model`` before returning.
    """
    accelerator = fresh_accelerator(mixed_precision, optim.grad_accum)
    device = accelerator.device
    optimizer = make_optimizer(model, optim.lr, optim.weight_decay, device)
    rank, world = accelerator.process_index, accelerator.num_processes
    batches_per_epoch = len(epoch_batches(data.train.lengths, optim.batch_size, 0, rank, world))
    updates = total_updates(batches_per_epoch, optim.grad_accum, optim.epochs, optim.max_steps)
    scheduler = make_scheduler(optimizer, optim.warmup_ratio, updates)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = loss_fn.to(device) if isinstance(loss_fn, torch.nn.Module) else loss_fn
    step_loss = step_loss or label_loss_step(loss_fn)

    state = LoopState(history=[])
    best = BestEpoch(None, {}, np.full(len(data.label_names), 0.5, dtype=np.float32))
    if checkpointing.resume:
        state, best = _load_checkpoint(checkpointing.directory, accelerator, checkpointing.fingerprint)
        log.info("resumed after epoch %d (best %s %.4f at epoch %d)",
                 state.epoch, optim.select_metric, state.best_metric, state.best_epoch)

    unwrapped = accelerator.unwrap_model(model)
    train_seconds, seen = 0.0, 0
    while state.epoch < optim.epochs and not step_limit_reached(state.step, optim.max_steps):
        epoch = state.epoch + 1
        batches = epoch_batches(data.train.lengths, optim.batch_size, optim.seed + epoch, rank, world)
        t0 = time.perf_counter()
        train_loss, rows = train_epoch(accelerator, model, optimizer, scheduler, step_loss, data.train, batches,
                                       state, optim.max_grad_norm, optim.max_steps, f"epoch {epoch}/{optim.epochs}")
        train_seconds += time.perf_counter() - t0
        seen += rows
        if world > 1:  # the history records the loss over all processes' rows, the same on each
            train_loss = float(accelerator.reduce(torch.tensor(train_loss, device=device), reduction="mean"))
        with own_forward(unwrapped):
            metrics, thresholds, _ = evaluate(unwrapped, data.val, data.val_labels, data.label_names,
                                              optim.eval_batch_size, "no", device, accelerator, data.schema)
        state.epoch = epoch
        improved = keep_if_best(state, best, unwrapped, epoch, metrics, thresholds, optim.select_metric)
        log_epoch(state, tracker, epoch, train_loss, metrics, improved)
        _save_checkpoint(checkpointing.directory, accelerator, state, best, checkpointing.fingerprint)
        if state.bad_epochs >= optim.patience:
            log.info("early stopping: no improvement for %d epochs", state.bad_epochs)
            break
    if best.weights is not None:
        unwrapped.load_state_dict(best.weights)
    # the trained model predicts as its reloaded artifact does: fp32, without the training autocast
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if world > 1:  # rows trained on by all processes together
        seen = int(accelerator.reduce(torch.tensor(seen, device=device), reduction="sum").item())
    metrics, thresholds = best.metrics, best.thresholds
    if data.tune_on is not None and best.metrics:
        with own_forward(unwrapped):
            metrics, thresholds = retuned(unwrapped, data, optim.eval_batch_size, device, accelerator)
        metrics["val_tuned_macro_f1"] = float(best.metrics["macro_f1"])  # at the thresholds validation chose
        log.info("thresholds tuned on %d transfer rows: validation macro-F1 %.4f (%.4f at validation-tuned ones)",
                 len(data.tune_targets), metrics["macro_f1"], best.metrics["macro_f1"])
    if data.test is not None and best.metrics:
        with own_forward(unwrapped):
            test = score_held_out(unwrapped, data.test, data.test_labels, data.label_names, thresholds,
                                  optim.eval_batch_size, device, accelerator, data.schema, level_cuts_of(metrics))
        tracker.log_metrics({f"test_{k}": v for k, v in summary(test).items()})
        log.info("test (%d rows, once, at the best epoch's thresholds): macro ROC-AUC %.4f  macro-F1 %.4f",
                 test["n"], test["macro_roc_auc"], test["macro_f1"])
        metrics = {**metrics, "test": test}
    return LoopResult(state, metrics, thresholds, train_seconds, seen)


def retuned(model, data: LoopData, batch_size: int, device, accelerator=None) -> tuple[dict, np.ndarray]:
    """Thresholds tuned on ``data.tune_on`` against ``data.tune_targets`` and the validation metrics at them.

    Returns (metrics, thresholds (L,)).
    """
    num_labels = data.val_labels.shape[1]
    probs = predicted_probs(model, data.tune_on, num_labels, batch_size, "no", device, accelerator)
    thresholds = tune_thresholds(data.tune_targets, probs)
    val_probs = predicted_probs(model, data.val, num_labels, batch_size, "no", device, accelerator)
    return multilabel_metrics(data.val_labels, val_probs, data.label_names, thresholds, data.schema), thresholds


# ----------------------------------------------------------------------------------------------
# Checkpoints.


CHECKPOINT_PREFIX = "epoch-"


def _save_checkpoint(ckpt: Path, accelerator, state: LoopState, best: BestEpoch, fingerprint: str) -> None:
    """Write this epoch's checkpoint as ``ckpt/epoch-NNNN`` without a moment where none is complete.

    It is written as ``ckpt/.epoch-NNNN.tmp`` (``state.json`` last), renamed into place, and only then are
    older ones deleted: a kill at any point leaves the newest complete checkpoint for ``--resume``.
    Every process calls ``save_state`` (DeepSpeed / FSDP ranks each save their shard); the main one
    writes the rest and swaps.
    """
    name = f"{CHECKPOINT_PREFIX}{state.epoch:04d}"
    tmp = ckpt / f".{name}.tmp"
    if accelerator.is_main_process:
        ckpt.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "accelerate"))
    # every process writes into tmp (its own RNG state at least): the main one renames tmp only once all have
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if best.weights is not None:
            torch.save(best.weights, tmp / "best.pt")
        (tmp / "state.json").write_text(json.dumps({
            "state": state.__dict__, "best_metrics": best.metrics,
            "best_thresholds": np.asarray(best.thresholds).tolist(), "fingerprint": fingerprint,
        }, default=float))
        shutil.rmtree(ckpt / name, ignore_errors=True)
        tmp.rename(ckpt / name)
        for older in _complete_checkpoints(ckpt)[:-1]:
            shutil.rmtree(older, ignore_errors=True)
    accelerator.wait_for_everyone()


def _complete_checkpoints(ckpt: Path) -> list[Path]:
    """``ckpt/epoch-NNNN`` directories, oldest first (a ``.tmp`` one being written is not complete)."""
    return sorted(p for p in ckpt.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit())


def _load_checkpoint(ckpt: Path, accelerator, fingerprint: str) -> tuple[LoopState, BestEpoch]:
    """The newest complete checkpoint in ``ckpt``; one-line UserError when there is none or it is damaged."""
    complete = _complete_checkpoints(ckpt)
    if not complete:
        raise UserError(f"nothing to resume: {ckpt} holds no complete checkpoint; run again without --resume")
    newest = complete[-1]
    damaged = f"cannot resume: the checkpoint {newest} is damaged"
    fix = "delete it to resume from an older one, or run again without --resume"
    try:
        saved = json.loads((newest / "state.json").read_text())
        state = LoopState(**saved["state"])
        thresholds = np.asarray(saved["best_thresholds"], dtype=np.float32)
        best_metrics, saved_fingerprint = dict(saved["best_metrics"]), str(saved["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{damaged} (state.json: {one_line(exc)[:80] or type(exc).__name__}); {fix}") from None
    if saved_fingerprint != fingerprint:
        raise UserError(
            f"cannot resume from {ckpt}: it was made with other data or another model/recipe; "
            "run without --resume (or with the original settings)"
        )
    if not (newest / "accelerate").is_dir():
        raise UserError(f"{damaged} (no accelerate/ state); {fix}")
    try:
        accelerator.load_state(str(newest / "accelerate"))
        weights = torch.load(newest / "best.pt", map_location="cpu") if (newest / "best.pt").is_file() else None
    except Exception as exc:  # noqa: BLE001 - torch / safetensors / accelerate raise many kinds
        raise UserError(f"{damaged} ({one_line(exc)[:80] or type(exc).__name__}); {fix}") from None
    return state, BestEpoch(weights, best_metrics, thresholds)
