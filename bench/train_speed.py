"""Training throughput: our loop vs a default Hugging Face ``Trainer`` (fp32), one run.

Both train the same checkpoint on the same rows with the same batch size for one epoch. Ours
is :func:`compress.train.train` (length-bucketed batches, dynamic padding, bf16 autocast where
the CPU has AMX); the reference is ``transformers.Trainer`` with its defaults (fp32,
``DataCollatorWithPadding``, random batches). Throughput is training examples per second of
the training loop only (no evaluation), as each reports it.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.config import load_config
from compress.train import TrainConfig, load_splits, train


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


def ours_speed(model_name: str, data: str, fmt: str | None, n: int, batch_size: int, max_length: int,
               seed: int, workdir: Path, mixed_precision: str) -> TrainSpeed:
    config = load_config(TrainConfig, None, [
        f"model={model_name}", f"data.data={data}", f"out={workdir / 'ours'}", f"optim.batch_size={batch_size}",
        "optim.epochs=1", f"max_length={max_length}", f"data.max_train_samples={n}", f"optim.seed={seed}",
        f"optim.mixed_precision={mixed_precision}", "tracking.enabled=false",
        *([f"data.format={fmt}"] if fmt else []),
    ])
    result = train(config)
    precision = "fp32" if result.mixed_precision == "no" else result.mixed_precision
    return TrainSpeed(f"modcompress ({precision})", n, n / result.train_examples_per_s)


def run(model: str, data: str, fmt: str | None = None, n: int = 2048, batch_size: int = 32,
        max_length: int = 128, seed: int = 0, mixed_precision: str = "auto") -> dict:
    """Measure both on the same ``n`` training rows; returns the JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = load_config(TrainConfig, None, [f"model={model}", f"data.data={data}",
                                                 f"data.max_train_samples={n}", f"optim.seed={seed}",
                                                 *([f"data.format={fmt}"] if fmt else [])])
        train_set = load_splits(config.data).train
        ours = ours_speed(model, data, fmt, len(train_set), batch_size, max_length, seed, workdir, mixed_precision)
        ref = hf_trainer_speed(model, train_set.texts, train_set.labels, batch_size, max_length, seed, workdir)
    return {
        "bench": "train-speed", "model": model, "data": data, "examples": len(train_set), "batch_size": batch_size,
        "max_length": max_length, "threads": torch.get_num_threads(),
        "rows": [
            {"name": r.name, "examples_per_s": round(r.examples_per_s, 2), "seconds": round(r.seconds, 6)}
            for r in (ours, ref)
        ],
        "ratio_vs_hf_trainer": round(ours.examples_per_s / ref.examples_per_s, 3),
    }


def markdown(report: dict) -> str:
    lines = ["| loop | examples/s | seconds | vs HF Trainer fp32 |", "|---|---:|---:|---:|"]
    ref = report["rows"][-1]["examples_per_s"]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | {row['examples_per_s']:.1f} | {row['seconds']:.1f} | "
                     f"{row['examples_per_s'] / ref:.2f}x |")
    return "\n".join(lines)


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2)
