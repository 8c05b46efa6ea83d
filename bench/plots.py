"""PNG plots of bench reports (matplotlib, Agg backend: no display needed).

* :func:`pareto_plot`: latency vs a quality metric, the Pareto front (no other point is both
  faster and better) drawn as a step line; claimed rule-of-thumb numbers as hollow grey markers.
* :func:`percentile_plot`: p50 / p90 / p99 latency per runtime row, grouped bars.
* :func:`throughput_plot`: throughput vs batch size, one line per runtime row.
* :func:`serve_speed_plot`: endpoint requests/s vs concurrency beside in-process examples/s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Point:
    """One model on the latency/quality plane."""

    name: str
    latency_ms: float
    metric: float


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both axes (lower latency and higher metric), fastest first."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.latency_ms, -p.metric)):
        if not front or p.metric > front[-1].metric:
            front.append(p)
    return front


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(points: Sequence[Point], path: str | os.PathLike[str], metric_label: str,
                claimed: Sequence[Point] = (), title: str = "Latency vs quality") -> Path:
    """Scatter of ``points`` (log latency) with the Pareto front; returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    front = pareto_front(points)
    on_front = {p.name for p in front}
    for p in points:
        ax.scatter(p.latency_ms, p.metric, s=50, color="tab:blue" if p.name in on_front else "tab:gray", zorder=3)
        ax.annotate(p.name, (p.latency_ms, p.metric), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if front:
        ax.step([p.latency_ms for p in front], [p.metric for p in front], where="post", color="tab:blue",
                label="Pareto front (measured)", zorder=2)
    for c in claimed:
        ax.scatter(c.latency_ms, c.metric, s=40, facecolors="none", edgecolors="gray", zorder=2)
        ax.annotate(c.name, (c.latency_ms, c.metric), textcoords="offset points", xytext=(5, -10), fontsize=7,
                    color="gray")
    if claimed:
        ax.scatter([], [], s=40, facecolors="none", edgecolors="gray", label="claimed (generic table)")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_ylabel(metric_label)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if front or claimed:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, plt, path)


def percentile_plot(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str) -> Path:
    """Grouped bars of p50/p90/p99 (ms, log scale) per row ``name``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 5))
    width = 0.27
    for k, (key, color) in enumerate((("p50_ms", "tab:blue"), ("p90_ms", "tab:orange"), ("p99_ms", "tab:red"))):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ax.bar(xs, [r[key] for r in rows], width=width, color=color, label=key.replace("_ms", ""))
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency per call (ms, log scale)")
    ax.set_title(title)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def throughput_plot(series: dict[str, list[tuple[int, float]]], path: str | os.PathLike[str], title: str) -> Path:
    """Throughput (examples/s) vs batch size, one line per series name."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in series.items():
        pts = sorted(pts)
        ax.plot([b for b, _ in pts], [t for _, t in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (log scale)")
    ax.set_ylabel("examples/s (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def serve_speed_plot(artifacts: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Endpoint requests/s (solid) and in-process examples/s at batch c (dashed) vs concurrency c."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for a in artifacts:
        cs = [r["concurrency"] for r in a["rows"]]
        line = ax.plot(cs, [r["endpoint"]["requests_per_s"] for r in a["rows"]], marker="o",
                       label=f"{a['artifact']} endpoint")[0]
        ax.plot(cs, [r["in_process"]["examples_per_s"] for r in a["rows"]], marker="x", linestyle="--",
                color=line.get_color(), label=f"{a['artifact']} in-process")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients c (log scale)")
    ax.set_ylabel("texts/s (log scale)")
    ax.set_title("Triton endpoint vs in-process")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out
