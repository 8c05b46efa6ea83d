"""bench measure: the timer (warm-up, then timed calls), percentiles, the machine, the busy-machine check."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bench import measure

# ---------------------------------------------------------------------------------------------- percentiles


def test_percentiles_are_numpys_linear_interpolation_in_ms():
    seconds = np.random.default_rng(0).exponential(0.01, size=101)
    got = measure.percentiles_ms(seconds)
    expected = np.percentile(seconds * 1000, [50, 90, 99])
    assert [got["p50_ms"], got["p90_ms"], got["p99_ms"]] == pytest.approx(expected.tolist(), rel=1e-12)
    assert got["mean_ms"] == pytest.approx(seconds.mean() * 1000, rel=1e-12)
    assert measure.percentiles_ms([0.001, 0.003], (50, 99)) == pytest.approx(
        {"p50_ms": 2.0, "p99_ms": 2.98, "mean_ms": 2.0})
    assert measure.percentiles_ms([], (50, 90)) == {"p50_ms": None, "p90_ms": None, "mean_ms": None}


# ---------------------------------------------------------------------------------------------- the timer


class FakeClock:
    """``time.perf_counter`` that only moves when a call 'runs' (``cost`` seconds per call)."""

    def __init__(self, cost: float) -> None:
        self.now, self.cost, self.calls = 0.0, cost, []

    def __call__(self) -> float:
        return self.now

    def fn(self, batch: list) -> None:
        self.calls.append(batch)
        self.now += self.cost


def test_time_calls_warms_up_then_times_each_call_on_the_cycled_batches(monkeypatch):
    clock = FakeClock(0.5)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    batches = [[1], [2, 2], [3]]
    timing = measure.time_calls(clock.fn, batches, warmup=2, iters=4)
    assert clock.calls == [[1], [2, 2], [1], [2, 2], [3], [1]]  # 2 warm-up calls, then 4 timed from the first
    assert timing.calls == 4 and timing.examples == 1 + 2 + 1 + 1
    assert timing.seconds.tolist() == [0.5] * 4 and timing.total_s == 2.0
    assert timing.examples_per_s == pytest.approx(5 / 2.0)
    summary = timing.summary()
    assert summary["iters"] == 4 and summary["p50_ms"] == summary["p99_ms"] == 500.0 and summary["throughput"] == 2.5


def test_time_calls_can_start_the_timed_calls_after_the_warm_up_inputs(monkeypatch):
    clock = FakeClock(0.1)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    measure.time_calls(clock.fn, [["a"], ["b"], ["c"]], warmup=2, iters=3, start=2)
    assert clock.calls == [["a"], ["b"], ["c"], ["a"], ["b"]]


def test_a_slow_call_stops_the_timer_after_the_time_limit_but_not_before_min_iters(monkeypatch):
    clock = FakeClock(1.0)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    timing = measure.time_calls(clock.fn, [["x"]], warmup=10, iters=50, max_seconds=4.0)
    # warm-up stops once it ran past max_seconds / 2 (3 calls), timing once past max_seconds (5 calls)
    assert len(clock.calls) == 3 + 5 and timing.calls == 5
    clock.calls.clear()
    assert measure.time_calls(clock.fn, [["x"]], warmup=0, iters=50, max_seconds=0.5).calls == measure.MIN_ITERS
    assert measure.time_calls(clock.fn, [["x"]], 0, 50, max_seconds=1.5, min_iters=1).calls == 2
    assert measure.time_calls(clock.fn, [], warmup=3, iters=3).calls == 0  # nothing to time: no call


# ---------------------------------------------------------------------------------------------- the machine


def test_environment_and_capabilities_come_from_compress_cpu():
    from compress.cpu import cpu_flags, cpu_model, physical_cores

    env = measure.environment()
    assert env["cpu"] == cpu_model() and env["logical_cpus"] == os.cpu_count()
    assert env["cpu_flags"] == {f: f in cpu_flags() for f in measure.ENVIRONMENT_FLAGS}
    caps = measure.cpu_capabilities()
    assert caps["cpu"] == cpu_model() and caps["physical_cores"] == physical_cores()
    assert caps["avx2"] == ("avx2" in cpu_flags())


# ---------------------------------------------------------------------------------------------- busy machine


def test_busy_machine_is_reported():
    busy = {"logical_cpus": 2, "load_average_1m_start": 0.3, "load_average_1m": 5.9}
    (note,) = measure.machine_notes(busy)
    assert "load average up to 5.9 on 2" in note
    assert measure.machine_notes({"logical_cpus": 2, "load_average_1m": 0.4}) == []


def test_other_cpu_work_is_what_the_machine_did_minus_our_own(monkeypatch):
    """Our own threads (the load average counts them) must not make a quiet machine look busy."""
    machine = iter([100.0, 106.0])  # 6 busy CPU seconds machine-wide during the run
    own = iter([10.0, 15.0])  # 5 of them were ours
    clock = itertools.chain([0.0, 10.0], itertools.repeat(10.0))  # over 10 s
    monkeypatch.setattr(measure, "_cpu_seconds", lambda: next(machine))
    monkeypatch.setattr(measure, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    env = {"logical_cpus": 2, "load_average_1m": 1.9, **measure.CpuWatch().stop()}
    assert env["other_cpus"] == 0.1
    assert measure.machine_notes(env) == []  # a load average of 1.9 on 2 CPUs was our own work
    (note,) = measure.machine_notes({**env, "other_cpus": 0.8})
    assert "other processes used 0.80 of 2 logical CPUs" in note


def _write_stat(path: Path, user: int, nice: int, system: int, idle: int, iowait: int, irq: int, softirq: int,
                steal: int) -> None:
    path.write_text(f"cpu  {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} 0 0\n"
                    f"cpu0 1 1 1 1 1 1 1 1 0 0\nintr 12345\n")


def test_cpu_watch_counts_busy_jiffies_of_proc_stat_minus_our_own_time(tmp_path, monkeypatch):
    """user + nice + system + irq + softirq + steal are busy; idle and iowait are not; jiffies / CLK_TCK = seconds."""
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    monkeypatch.setattr(measure, "PROC_STAT", str(stat))
    own = iter([3.0, 5.0])  # we used 2 CPU seconds
    clock = itertools.chain([0.0, 4.0], itertools.repeat(4.0))  # over 4 s
    monkeypatch.setattr(measure, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    _write_stat(stat, 1000, 10, 500, 90_000, 40, 5, 7, 3)
    watch = measure.CpuWatch()
    # 8 busy seconds machine-wide (3 user, 1 nice, 2 system, 1 irq, 0.5 softirq, 0.5 steal); idle/iowait moved too
    _write_stat(stat, 1000 + 3 * hz, 10 + hz, 500 + 2 * hz, 90_000 + 50 * hz, 40 + 9 * hz, 5 + hz, 7 + hz // 2,
                3 + hz // 2)
    result = watch.stop()
    assert result == {"other_cpus": 1.5}  # (8 - 2) / 4
    (note,) = measure.machine_notes({"logical_cpus": 2, **result})
    assert "other processes used 1.50 of 2 logical CPUs" in note


def test_cpu_watch_without_proc_stat_reports_nothing_and_falls_back_to_the_load_average(tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "PROC_STAT", str(tmp_path / "absent"))
    assert measure.CpuWatch().stop() == {}
    env = measure.CpuWatch().environment()
    assert "other_cpus" not in env and "load_average_1m_start" in env


def test_cpu_watch_reads_this_machine():
    """Where /proc/stat is readable (Linux) the watch sees our own busy time and reports other work as a number of
    CPUs between 0 and the machine's; elsewhere it reports nothing."""
    watch = measure.CpuWatch()
    before, own_before, wall = measure._cpu_seconds(), measure._own_cpu_seconds(), time.perf_counter()
    while measure._own_cpu_seconds() - own_before < 0.3:  # keep one CPU busy for 0.3 s
        sum(i * i for i in range(10_000))
    after, own, wall = measure._cpu_seconds(), measure._own_cpu_seconds() - own_before, time.perf_counter() - wall
    result = watch.stop()
    if not Path(measure.PROC_STAT).is_file():
        assert before is None and result == {}
        return
    assert before is not None and after is not None
    tick = 2 / os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)  # /proc/stat counts whole jiffies per CPU
    assert own - tick <= after - before <= wall * (os.cpu_count() or 1) + tick  # seconds, not jiffies
    assert set(result) == {"other_cpus"}
    assert 0 <= result["other_cpus"] <= (os.cpu_count() or 1) + 0.5
