"""``mixed_precision=auto``: decided from measurements (fake ones here, no timing), cached, overridable."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from compress import precision
from compress.batching import Encoded
from compress.cache import CACHE_ENV, MeasurementCache, cache_root
from compress.errors import ConfigError, UserError
from compress.precision import AUTO_ENV, AUTO_INFERENCE_ENV, INFERENCE, TRAINING, choose_precision, decide
from compress.precision_probe import TrainingProbe, interleaved_seconds, model_signature, typical_batch

CPU = torch.device("cpu")


class FakeProbe:
    """Reports fixed (fp32, bf16) seconds per step and counts how often it was measured."""

    def __init__(self, fp32_s: float, bf16_s: float, task: str = TRAINING, batch=(32, 48)) -> None:
        self.task, self.seconds, self.batch, self.calls = task, (fp32_s, bf16_s), list(batch), 0

    def signature(self) -> dict:
        return {"model": "Fake", "parameters": 10, "batch": self.batch}

    def measure(self) -> tuple[float, float]:
        self.calls += 1
        return self.seconds


@pytest.fixture
def measuring(monkeypatch, tmp_path) -> MeasurementCache:
    """A CPU with bf16 hardware, auto not forced, a fresh cache file."""
    monkeypatch.delenv(AUTO_ENV, raising=False)
    monkeypatch.delenv(AUTO_INFERENCE_ENV, raising=False)
    monkeypatch.setattr(precision, "fast_bf16", lambda: True)
    return MeasurementCache(tmp_path / "cache" / "precision.json")


@pytest.mark.parametrize(("fp32_s", "bf16_s", "expected", "says"), [
    (0.030, 0.020, "bf16", "auto -> bf16: bf16 training step 1.50x faster here (measured bf16 20 vs fp32 30 ms)"),
    (0.025, 0.031, "no", "auto -> fp32: bf16 training step 1.24x slower here (measured bf16 31 vs fp32 25 ms)"),
    (0.025, 0.024, "no", "auto -> fp32: bf16 training step only 1.04x faster here (measured bf16 24 vs fp32 25 ms; "
                         "fp32 is kept unless bf16 is 1.10x faster)"),
])
def test_bf16_only_when_measured_faster_by_the_margin(measuring, caplog, fp32_s, bf16_s, expected, says):
    probe = FakeProbe(fp32_s, bf16_s)
    with caplog.at_level(logging.INFO, logger="compress.precision"):
        choice = choose_precision("auto", CPU, probe, measuring)
    assert (choice.precision, choice.how, choice.reason) == (expected, "measured", says)
    assert probe.calls == 1 and choice.fp32_ms == pytest.approx(fp32_s * 1000)
    assert choice.bf16_ms == pytest.approx(bf16_s * 1000) and choice.record()["reason"] == says
    assert says in caplog.text  # the one line a user sees


def test_inference_is_its_own_task():
    assert decide(INFERENCE, 0.04, 0.01) == ("bf16", "auto -> bf16: bf16 forward pass 4.00x faster here "
                                                     "(measured bf16 10 vs fp32 40 ms)")


def test_no_bf16_hardware_means_fp32_without_measuring(measuring, monkeypatch):
    monkeypatch.setattr(precision, "fast_bf16", lambda: False)
    probe = FakeProbe(0.030, 0.010)
    choice = choose_precision("auto", CPU, probe, measuring)
    assert (choice.precision, choice.how, probe.calls) == ("no", "no-bf16-hardware", 0)
    assert not measuring.path.exists()


@pytest.mark.parametrize("task", [TRAINING, INFERENCE])
def test_the_tasks_environment_variable_wins_over_measuring(measuring, monkeypatch, task):
    other = AUTO_INFERENCE_ENV if task == TRAINING else AUTO_ENV
    monkeypatch.setenv(precision.AUTO_ENVS[task], "bf16")
    monkeypatch.setenv(other, "no")  # the other task's variable does not apply
    probe = FakeProbe(0.010, 0.030, task)  # bf16 3x slower: a measurement would say fp32
    choice = choose_precision("auto", CPU, probe, measuring)
    assert (choice.precision, choice.how, probe.calls) == ("bf16", "env", 0)
    assert choice.reason == f"auto -> bf16: set by {precision.AUTO_ENVS[task]}"
    monkeypatch.setenv(precision.AUTO_ENVS[task], "nonsense")
    with pytest.raises(ConfigError, match=f"{precision.AUTO_ENVS[task]}: must be no, fp32 or bf16, got 'nonsense'"):
        choose_precision("auto", CPU, probe, measuring)


def test_an_explicit_precision_is_not_measured(measuring):
    probe = FakeProbe(0.030, 0.010)
    assert choose_precision("no", CPU, probe, measuring).how == "explicit"
    assert choose_precision("bf16", CPU, probe, measuring).precision == "bf16" and probe.calls == 0
    with pytest.raises(UserError, match="mixed_precision=fp16 needs a GPU"):
        choose_precision("fp16", CPU, probe, measuring)


def test_a_cached_measurement_skips_the_probe(measuring):
    first = choose_precision("auto", CPU, FakeProbe(0.030, 0.020), measuring)
    again = FakeProbe(0.001, 0.999)  # what it would measure now does not matter: the cache answers
    second = choose_precision("auto", CPU, again, measuring)
    assert again.calls == 0 and second.how == "cached" and second.precision == first.precision == "bf16"
    assert second.reason.startswith(first.reason) and str(measuring.path) in second.reason
    entry = next(iter(json.loads(measuring.path.read_text())["entries"].values()))
    assert entry["fp32_ms"] == pytest.approx(30) and entry["bf16_ms"] == pytest.approx(20)
    assert entry["task"] == TRAINING and entry["batch"] == [32, 48] and entry["cpu"] and entry["torch"]
    # another batch shape, or the other task, is another key: measured
    for probe in (FakeProbe(0.030, 0.020, batch=(16, 48)), FakeProbe(0.030, 0.020, task=INFERENCE)):
        assert choose_precision("auto", CPU, probe, measuring).how == "measured" and probe.calls == 1


def test_an_unwritable_cache_still_decides(measuring, tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a directory")
    cache = MeasurementCache(tmp_path / "a-file" / "precision.json")
    for _ in range(2):  # nothing could be kept, so both measure
        probe = FakeProbe(0.030, 0.020)
        with caplog.at_level(logging.WARNING, logger="compress.cache"):
            choice = choose_precision("auto", CPU, probe, cache)
        assert (choice.precision, choice.how, probe.calls) == ("bf16", "measured", 1)
    assert "cannot write the measurement cache" in caplog.text and CACHE_ENV in caplog.text


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 1, "entries": []}', '{"version": 99}'])
def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_rewritten(measuring, caplog, content):
    measuring.path.parent.mkdir(parents=True)
    measuring.path.write_text(content)
    probe = FakeProbe(0.025, 0.031)
    with caplog.at_level(logging.WARNING, logger="compress.cache"):
        choice = choose_precision("auto", CPU, probe, measuring)
    assert (choice.precision, choice.how, probe.calls) == ("no", "measured", 1)
    assert "ignoring the measurement cache" in caplog.text and "Traceback" not in caplog.text
    assert len(json.loads(measuring.path.read_text())["entries"]) == 1


def test_a_malformed_entry_is_measured_again(measuring):
    choose_precision("auto", CPU, FakeProbe(0.030, 0.020), measuring)
    data = json.loads(measuring.path.read_text())
    key = next(iter(data["entries"]))
    data["entries"][key]["bf16_ms"] = "fast"
    measuring.path.write_text(json.dumps(data))
    probe = FakeProbe(0.025, 0.031)
    assert choose_precision("auto", CPU, probe, measuring).how == "measured" and probe.calls == 1


def test_a_failing_probe_keeps_fp32(measuring, caplog):
    class Broken(FakeProbe):
        def measure(self):
            raise RuntimeError("no bf16 kernel for\nthis op")

    with caplog.at_level(logging.WARNING, logger="compress.precision"):
        choice = choose_precision("auto", CPU, Broken(0, 0), measuring)
    assert (choice.precision, choice.how) == ("no", "probe-failed")
    assert choice.reason == "auto -> fp32: the bf16 training step probe failed (RuntimeError: no bf16 kernel for this op)"
    assert not measuring.path.exists()


def test_cache_root_override_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert MeasurementCache.default().path == tmp_path / "mine" / "precision.json"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "modcompress"


# ---------------------------------------------------------------------------------------------- the probes


def test_interleaved_seconds_warms_up_alternates_and_takes_medians():
    clock = {"now": 0.0}
    cost = {"no": [5.0, 1.0, 1.0, 1.0, 9.0], "bf16": [7.0, 2.0, 2.0, 8.0, 2.0]}  # 2 warm-up, 3 timed each
    calls: list[str] = []

    def run(p: str) -> None:
        clock["now"] += cost[p][sum(c == p for c in calls)]
        calls.append(p)

    seconds = interleaved_seconds(run, warmup=2, iters=3, timer=lambda: clock["now"])
    assert calls == ["no", "bf16"] * 2 + ["no", "bf16", "bf16", "no", "no", "bf16"]
    assert seconds == {"no": 1.0, "bf16": 2.0}  # medians of the timed steps; the slow warm-ups are not counted


def test_typical_batch_is_a_full_batch_of_median_length():
    lengths = [3] * 8 + [10] * 8 + [20] * 8 + [4]  # 3 full batches of 8 when bucketed, and one row left over
    encoded = Encoded([list(range(1, n + 1)) for n in lengths], np.zeros((len(lengths), 2), np.float32), 0)
    batch = typical_batch(encoded, 8)
    assert tuple(batch["input_ids"].shape) == (8, 10) and tuple(batch["labels"].shape) == (8, 2)
    assert tuple(typical_batch(encoded, 8, world=2)["input_ids"].shape) == (4, 10)  # one process's share


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core machine: a second thread only waits (and makes each step ~100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_probe_changes_neither_the_model_nor_the_random_state(tiny_bert_dir, one_thread):
    from transformers import AutoModelForSequenceClassification

    from compress.loop import label_loss_step

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, problem_type="multi_label_classification")
    rows = [list(range(1, n + 3)) for n in (5, 6, 7, 8)]
    encoded = Encoded(rows, np.ones((4, 6), np.float32), 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    probe = TrainingProbe(model, encoded, 4, 1, label_loss_step(torch.nn.BCEWithLogitsLoss()), CPU)
    fp32_s, bf16_s = probe.measure()
    assert fp32_s > 0 and bf16_s > 0
    assert probe.signature() == {**model_signature(model), "batch": [4, 10]}
    assert probe.signature()["num_hidden_layers"] == 2 and probe.signature()["hidden_size"] == 32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and "forward" not in model.__dict__
