"""One Markdown (or HTML) report from bench JSON reports, with PNG plots.

``build_report(reports, out_dir)`` takes any mix of ``bench table / latency / accuracy / load /
serve-speed`` JSON reports (each has a ``bench`` key) and writes into ``out_dir``:

* ``pareto.png``: batch-1 p50 latency vs the compared metric (from a table report; else from a
  latency report joined with an accuracy report by artifact name), Pareto front marked;
* ``latency_percentiles.png``: p50/p90/p99 per runtime row at batch 1 (first length);
* ``throughput_vs_batch.png``: examples/s vs batch size per runtime row (first length);
* ``serve_speed.png``: endpoint vs in-process throughput per concurrency;
* ``report.md`` (or ``report.html``) embedding them beside each report's own tables.

matplotlib loads when a plot is drawn.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compress.errors import ConfigError, DataError

KINDS = ("table", "latency", "accuracy", "serve-speed", "load")
FORMATS = ("md", "html")

# ----------------------------------------------------------------------------------------------
# Reading reports


def load_reports(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Bench JSON reports from files; each must carry a known ``bench`` kind."""
    reports = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"report file not found: {path}; pass JSON written by a bench command's --json-out")
        try:
            report = json.loads(path.read_text())
        except ValueError:
            raise DataError(f"{path} is not valid JSON; pass JSON written by a bench command's --json-out") from None
        kind = report.get("bench") if isinstance(report, dict) else None
        if kind not in KINDS:
            raise DataError(f"{path} is not a bench report (bench = {kind!r}); pass output of "
                            f"bench {' / '.join(KINDS)} --json-out")
        report["_source"] = str(path)
        reports.append(report)
    return reports


def find_reports(directory: str | os.PathLike[str] = "runs/bench") -> list[Path]:
    """The bench JSON reports in ``directory`` (files whose ``bench`` key is a known kind)."""
    found = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            kind = json.loads(path.read_text()).get("bench")
        except (OSError, ValueError, AttributeError):
            continue
        if kind in KINDS:
            found.append(path)
    if not found:
        raise DataError(f"no bench reports in {directory}/; pass --from FILE.json (written by bench table / latency "
                        f"/ accuracy / serve-speed --json-out)")
    return found


# ----------------------------------------------------------------------------------------------
# Plots from reports


def _first(reports: Sequence[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((r for r in reports if r["bench"] == kind), None)


def pareto_points(reports: Sequence[dict[str, Any]]) -> tuple[list[Any], list[Any], str]:
    """(measured points, claimed points, metric label) for the Pareto plot."""
    from bench.plots import Point
    from bench.table import CLAIMED, COMPARED_METRIC, METRIC_NAMES

    table = _first(reports, "table")
    if table is not None:
        metric = table["compared_metric"]
        points = [Point(r["artifact"], r["latency_p50_ms"], r["metrics"][metric]) for r in table["rows"]
                  if r["status"] == "ok" and r.get("metrics", {}).get(metric) is not None]
        claimed = [Point(c.model, c.latency_ms, c.accuracy) for c in CLAIMED]
        return points, claimed, f"{METRIC_NAMES[metric]} (claimed: \"accuracy\")"
    latency, accuracy = _first(reports, "latency"), _first(reports, "accuracy")
    if latency is None or accuracy is None:
        return [], [], ""
    quality = {r["name"]: r["metrics"][COMPARED_METRIC] for r in accuracy["rows"]
               if r["status"] == "ok" and r["metrics"].get(COMPARED_METRIC) is not None}
    first_len = next((r["seq_length"] for r in latency["rows"] if r["status"] == "ok"), None)
    points = [Point(r["name"], r["p50_ms"], quality[r["artifact_name"]]) for r in latency["rows"]
              if r["status"] == "ok" and r["batch_size"] == 1 and r["seq_length"] == first_len
              and r["artifact_name"] in quality]
    return points, [], METRIC_NAMES[COMPARED_METRIC]


def _latency_views(latency: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[tuple[int, float]]], Any]:
    ok = [r for r in latency["rows"] if r["status"] == "ok"]
    if not ok:
        return [], {}, None
    length = ok[0]["seq_length"]
    at_len = [r for r in ok if r["seq_length"] == length]
    smallest = min(r["batch_size"] for r in at_len)
    bars = [r for r in at_len if r["batch_size"] == smallest]
    series: dict[str, list[tuple[int, float]]] = {}
    for r in at_len:
        series.setdefault(r["name"], []).append((r["batch_size"], r["throughput"]))
    return bars, series, (length, smallest)


def make_plots(reports: Sequence[dict[str, Any]], out_dir: Path) -> list[list[tuple[str, Path]]]:
    """Every plot the reports allow, per report (same order): ``[(plot key, PNG path), ...]``.

    The Pareto plot goes with the table report, or with the first latency report when there is
    no table (it then joins latency with an accuracy report). A second latency or serve-speed
    report gets its own files (``latency_percentiles-2.png``, ...).
    """
    from bench import plots

    made: list[list[tuple[str, Path]]] = [[] for _ in reports]
    seen: dict[str, int] = {}

    def name(stem: str) -> Path:
        seen[stem] = seen.get(stem, 0) + 1
        return out_dir / (f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png")

    points, claimed, label = pareto_points(reports)
    if points:
        owner = next((i for i, r in enumerate(reports) if r["bench"] == "table"), None)
        if owner is None:
            owner = next(i for i, r in enumerate(reports) if r["bench"] == "latency")
        made[owner].append(("pareto", plots.pareto_plot(points, name("pareto"), label, claimed,
                                                        title="Latency vs quality (measured here; claimed in grey)")))
    for i, report in enumerate(reports):
        if report["bench"] == "latency":
            bars, series, where = _latency_views(report)
            if bars:
                length, batch = where
                made[i].append(("percentiles", plots.percentile_plot(
                    bars, name("latency_percentiles"), f"Latency percentiles, batch {batch}, length {length}")))
            if any(len(v) > 1 for v in series.values()):
                made[i].append(("throughput", plots.throughput_plot(
                    series, name("throughput_vs_batch"), f"Throughput vs batch size, length {where[0]}")))
        elif report["bench"] == "serve-speed":
            ok = [a for a in report["artifacts"] if a["status"] == "ok"]
            if ok:
                made[i].append(("serve_speed", plots.serve_speed_plot(ok, name("serve_speed"))))
    return made


# ----------------------------------------------------------------------------------------------
# The report


def _section_markdown(report: dict[str, Any]) -> str:
    from bench import accuracy, latency, load, serve_speed, table

    render = {"table": table.markdown, "latency": latency.markdown, "accuracy": accuracy.markdown,
              "serve-speed": serve_speed.markdown, "load": load.markdown}[report["bench"]]
    return render(report)


TITLES = {"table": "Model selection: claimed vs measured", "latency": "Latency and throughput",
          "accuracy": "Accuracy on one labelled set", "serve-speed": "Serving: Triton endpoint vs in-process",
          "load": "Load test (locust)"}
ALT = {"pareto": "latency/quality Pareto front", "percentiles": "latency percentiles per runtime",
       "throughput": "throughput vs batch size", "serve_speed": "endpoint vs in-process throughput"}


def build_report(reports: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str], fmt: str = "md") -> Path:
    """Write plots and ``report.md`` / ``report.html`` into ``out_dir``; returns the report path."""
    if fmt not in FORMATS:
        raise ConfigError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not reports:
        raise DataError("no reports to render; pass --from FILE.json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(reports, key=lambda r: KINDS.index(r["bench"]))  # stable: same-kind reports keep their order
    plots_made = make_plots(order, out)
    env = next((r["environment"] for r in reports if "environment" in r), {})
    lines = ["# modcompress benchmark report", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from "
             f"{', '.join('`' + Path(r['_source']).name + '`' for r in reports if '_source' in r) or 'in-memory reports'}."]
    if env:
        flags = ", ".join(k for k, v in env.get("cpu_flags", {}).items() if v) or "none listed"
        lines += ["", f"Machine: {env.get('cpu', '?')}, {env.get('logical_cpus', '?')} logical CPUs "
                      f"({flags}), torch {env.get('torch', '?')} with {env.get('torch_threads', '?')} threads, "
                      f"onnxruntime {env.get('onnxruntime', '—')}, GPU: {env.get('cuda') or 'none'}."]
    for report, made in zip(order, plots_made, strict=True):
        lines += ["", f"## {TITLES[report['bench']]}", ""]
        if report.get("_source"):
            lines += [f"From `{Path(report['_source']).name}`.", ""]
        for key, path in made:
            lines += [f"![{ALT[key]}]({path.name})", ""]
        lines.append(_section_markdown(report).rstrip("\n"))
    text = "\n".join(lines) + "\n"
    if fmt == "md":
        path = out / "report.md"
        path.write_text(text)
    else:
        path = out / "report.html"
        path.write_text(markdown_to_html(text, "modcompress benchmark report"))
    return path


_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def markdown_to_html(text: str, title: str) -> str:
    """The small Markdown subset these reports use (headings, tables, images, paragraphs) as HTML."""
    body: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif _IMAGE.match(line):
            alt, src = _IMAGE.match(line).groups()  # type: ignore[union-attr]
            body.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(alt)}"></p>')
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            header, data = rows[0], rows[2:]
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr></thead>"
                        "<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                            for r in data) + "</tbody></table>")
            continue
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;} table{border-collapse:collapse;"
             "margin:1em 0;} td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;} img{max-width:100%;}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
