"""`bench train-speed`: both loops train on the same rows; the ratio is ours / HF Trainer's."""

from __future__ import annotations

import json

import pytest

from bench import train_speed
from modcompress.cli import bench_main as main


@pytest.fixture(scope="module")
def report(tiny_bert_dir, jigsaw_csv):
    # fp32 only: the row names and the ratio are fp32 vs the Trainer's fp32 on any CPU
    return train_speed.run(str(tiny_bert_dir), str(jigsaw_csv), n=96, batch_size=16, max_length=32,
                           precisions=("no",))


def test_both_loops_train_the_same_rows_and_the_ratio_is_theirs(report):
    ours, hf = report["rows"]
    assert ours["name"] == "modcompress (fp32)" and hf["name"] == "hf_trainer_fp32"
    assert report["examples"] == 96  # the first 96 rows of the training split, the same rows for both loops
    for row in (ours, hf):
        assert row["seconds"] > 0
        assert row["examples_per_s"] == pytest.approx(report["examples"] / row["seconds"], rel=0.01)
    assert report["ratio_vs_hf_trainer"] == pytest.approx(ours["examples_per_s"] / hf["examples_per_s"], rel=0.01)
    table = train_speed.markdown(report)
    assert table.splitlines()[2].startswith("| modcompress (fp32) |") and table.rstrip().endswith("| 1.00x |")


def test_fp32_and_bf16_rows_in_one_run_and_what_auto_picked(tiny_bert_dir, jigsaw_csv, monkeypatch, tmp_path):
    from compress import precision
    from compress.precision_probe import TrainingProbe

    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setenv("MODCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "fast_bf16", lambda: True)
    monkeypatch.setattr(TrainingProbe, "measure", lambda probe: (0.030, 0.020))  # bf16 1.5x faster: auto -> bf16
    report = train_speed.run(str(tiny_bert_dir), str(jigsaw_csv), n=48, batch_size=16, max_length=16)
    fp32, bf16, hf = report["rows"]
    assert [r["name"] for r in report["rows"]] == ["modcompress (fp32)", "modcompress (bf16)", "hf_trainer_fp32"]
    assert (fp32["auto"], bf16["auto"], hf["auto"]) == (False, True, False)
    auto = report["auto"]
    assert auto["picked"] == "bf16" and auto["how"] == "measured" and auto["reason"].startswith("auto -> bf16:")
    assert auto["faster_this_run"] == ("bf16" if bf16["examples_per_s"] > fp32["examples_per_s"] else "fp32")
    assert auto["picked_the_faster"] == (auto["faster_this_run"] == "bf16")
    assert report["ratio_vs_hf_trainer"] == pytest.approx(bf16["examples_per_s"] / hf["examples_per_s"], rel=0.01)
    assert report["environment"]["cpu"] and "bf16_hardware" in report["environment"]
    table = train_speed.markdown(report).splitlines()
    assert table[0].startswith(f"| loop ({report['environment']['cpu']}, ")
    assert table[3].startswith("| modcompress (bf16) |") and "| chosen (probe: bf16 step 1.50x faster) |" in table[3]


def test_bf16_is_measured_by_default_only_where_the_cpu_has_bf16_hardware(monkeypatch):
    monkeypatch.setattr(train_speed, "fast_bf16", lambda: True)
    assert train_speed.default_precisions() == (("no", "bf16"), [])
    monkeypatch.setattr(train_speed, "fast_bf16", lambda: False)
    precisions, notes = train_speed.default_precisions()
    assert precisions == ("no",) and "no bf16 hardware" in notes[0]


def test_cli_prints_json_and_markdown_and_writes_the_report(tmp_path, tiny_bert_dir, jigsaw_csv, capsys):
    out = tmp_path / "speed.json"
    assert main(["train-speed", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--examples", "48",
                 "--batch-size", "16", "--max-length", "16", "--json-out", str(out), "--no-tracking"]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    start = printed.index('{\n  "bench": "train-speed"')
    assert json.loads(printed[start : printed.index("\n}\n", start) + 2]) == written
    assert "| hf_trainer_fp32 |" in printed and written["bench"] == "train-speed"
