"""Training throughput: our loop in fp32 and in bf16, against a default Hugging Face ``Trainer`` (fp32), one run.

All train the same checkpoint on the same rows with the same batch size for one epoch. Ours is
:func:`compress.train.train` (length-bucketed batches, dynamic padding), once per precision
(fp32, and bf16 autocast where the CPU has bf16 hardware: elsewhere bf16 is emulated and far
slower, so it is measured only when asked); the reference is ``transformers.Trainer`` with its
defaults (fp32, ``DataCollatorWithPadding``, random batches). Throughput is training examples per
second of the training loop only (no evaluation), as each reports it.

The report also says what ``mixed_precision=auto`` picks for this model, data and batch size
(:func:`compress.train.auto_precision`: a short measured probe, or its cached result) and whether
that is the loop that was faster over the whole epoch here; ``ratio_vs_hf_trainer`` is the ratio
of that loop (the default a user gets). The CPU, its bf16 hardware and how busy other processes
kept it are in ``environment``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.measure import CpuWatch, machine_notes
from compress.config import check_num_threads, load_config
from compress.errors import ConfigError
from compress.precision import fast_bf16, precision_name
from compress.train import TrainConfig, auto_precision, load_splits, train

PRECISIONS = ("auto", "no", "fp32", "bf16", "fp16")


@dataclass
class TrainSpeed:
    name: str
    examples: int
    seconds: float

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


def hf_trainer_speed(model_name: str, texts: list[str], labels: np.ndarray, batch_size: int, max_length: int,
                     seed: int, workdir: Path) -> TrainSpeed:
    """One fp32 epoch of a default ``Trainer`` over ``texts``; examples/s of its train loop."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from compress.models.teacher import load_teacher

    names = [f"label_{j}" for j in range(labels.shape[1])]
    model, tokenizer = load_teacher(model_name, names)
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": labels[i].astype(np.float32).tolist()} for i in range(len(texts))]

    class _Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict:
            return rows[i]

    args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=batch_size, num_train_epochs=1,
        learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01, report_to=[], save_strategy="no",
        eval_strategy="no", logging_strategy="no", seed=seed, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Rows(),
                      data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    trainer.train()
    return TrainSpeed("hf_trainer_fp32", len(rows), time.perf_counter() - t0)


def _config(model_name: str, data: str, fmt: str | None, n: int, batch_size: int, max_length: int, seed: int,
            out: Path, mixed_precision: str, threads: int | None) -> TrainConfig:
    return load_config(TrainConfig, None, [
        f"model={model_name}", f"data.data={data}", f"out={out}", f"optim.batch_size={batch_size}",
        "optim.epochs=1", f"max_length={max_length}", f"data.max_train_samples={n}", f"optim.seed={seed}",
        f"optim.mixed_precision={mixed_precision}", "tracking.enabled=false",
        *([f"data.format={fmt}"] if fmt else []), *([f"num_threads={threads}"] if threads else []),
    ])


def ours_speed(config: TrainConfig, n: int) -> tuple[TrainSpeed, str]:
    """One epoch of :func:`compress.train.train`; (its speed, the precision it trained in: ``fp32`` | ``bf16`` | ...)."""
    result = train(config)
    precision = precision_name(result.mixed_precision)
    return TrainSpeed(f"modcompress ({precision})", n, n / result.train_examples_per_s), precision


def default_precisions() -> tuple[tuple[str, ...], list[str]]:
    """(precisions to measure, notes): fp32 and bf16 where the CPU has bf16 hardware, else fp32 alone."""
    if fast_bf16():
        return ("no", "bf16"), []
    return ("no",), ["bf16 not measured: this CPU has no bf16 hardware (AMX / AVX512-BF16), where bf16 autocast is "
                     "emulated and far slower than fp32 (--mixed-precision bf16 measures it anyway)."]


def run(model: str, data: str, fmt: str | None = None, n: int = 2048, batch_size: int = 32,
        max_length: int = 128, seed: int = 0, precisions: Sequence[str] | None = None,
        threads: int | None = None) -> dict:
    """Measure our loop in each of ``precisions`` (default :func:`default_precisions`) and the HF Trainer on
    the same ``n`` training rows, all with ``threads`` intra-op threads (None: torch's default); returns
    the JSON report."""
    check_num_threads(threads, "threads")
    if threads:
        torch.set_num_threads(threads)
    notes: list[str] = []
    if precisions is None:
        precisions, notes = default_precisions()
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"precisions: each must be one of {', '.join(PRECISIONS)}, got {list(precisions)}")
    precisions = list(dict.fromkeys("no" if p == "fp32" else p for p in precisions))
    watch = CpuWatch()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base = _config(model, data, fmt, n, batch_size, max_length, seed, workdir / "auto", "auto", threads)
        train_set = load_splits(base.data).train
        choice = auto_precision(base)
        ours: list[tuple[TrainSpeed, str]] = []
        for i, precision in enumerate(precisions):
            ours.append(ours_speed(_config(model, data, fmt, len(train_set), batch_size, max_length, seed,
                                           workdir / f"ours{i}", precision, threads), len(train_set)))
        ref = hf_trainer_speed(model, train_set.texts, train_set.labels, batch_size, max_length, seed, workdir)
    env = watch.environment()
    picked = precision_name(choice.precision)
    by_precision = {precision: speed for speed, precision in ours}
    auto_row = by_precision.get(picked, ours[0][0])
    faster = max(ours, key=lambda o: o[0].examples_per_s)[1] if len(by_precision) > 1 else None
    rows = [{"name": r.name, "precision": p, "examples_per_s": round(r.examples_per_s, 2), "seconds": round(r.seconds, 6),
             "vs_hf_trainer": round(r.examples_per_s / ref.examples_per_s, 3), "auto": p == picked}
            for r, p in ours]
    rows.append({"name": ref.name, "precision": "fp32", "examples_per_s": round(ref.examples_per_s, 2),
                 "seconds": round(ref.seconds, 6), "vs_hf_trainer": 1.0, "auto": False})
    return {
        "bench": "train-speed", "model": model, "data": data, "examples": len(train_set), "batch_size": batch_size,
        "max_length": max_length, "threads": torch.get_num_threads(), "environment": env,
        "rows": rows,
        "auto": {**choice.record(), "picked": picked, "faster_this_run": faster,
                 "picked_the_faster": None if faster is None else faster == picked},
        "ratio_vs_hf_trainer": round(auto_row.examples_per_s / ref.examples_per_s, 3),
        "notes": notes + machine_notes(env),
    }


def _auto_cell(row: dict, auto: dict[str, Any]) -> str:
    if not row["auto"]:
        return ""
    if auto.get("fp32_ms") and auto.get("bf16_ms"):
        speedup = auto["fp32_ms"] / auto["bf16_ms"]
        ratio = f"bf16 step {speedup:.2f}x faster" if speedup >= 1 else f"bf16 step {1 / speedup:.2f}x slower"
        probe = "probe" if auto["how"] == "measured" else f"{auto['how']} probe"
        return f"chosen ({probe}: {ratio})"
    return f"chosen ({auto['how']})"


def markdown(report: dict) -> str:
    """The table: one row per loop; the header names the CPU; ``auto`` marks the loop auto trains with."""
    env = report.get("environment", {})
    busy = f", others used {env['other_cpus']:.1f} of {env['logical_cpus']} CPUs" \
        if env.get("other_cpus") is not None and env.get("logical_cpus") else ""
    where = f"{env.get('cpu', '?')}, {report.get('threads', '?')} threads{busy}"
    lines = [f"| loop ({where}) | examples/s | seconds | auto | vs HF Trainer fp32 |", "|---|---:|---:|---|---:|"]
    ref = report["rows"][-1]["examples_per_s"]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | {row['examples_per_s']:.1f} | {row['seconds']:.1f} | "
                     f"{_auto_cell(row, report.get('auto', {}))} | {row['examples_per_s'] / ref:.2f}x |")
    return "\n".join(lines)


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2)
