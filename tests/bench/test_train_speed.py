"""`bench train-speed`: both loops train on the same rows; the ratio is ours / HF Trainer's."""

from __future__ import annotations

import json

import pytest

from bench import train_speed
from modcompress.cli import bench_main as main


@pytest.fixture(scope="module")
def report(tiny_bert_dir, jigsaw_csv):
    # fp32 pinned: the row names and the ratio are fp32 vs the Trainer's fp32 on any CPU (auto picks bf16 on AMX)
    return train_speed.run(str(tiny_bert_dir), str(jigsaw_csv), n=96, batch_size=16, max_length=32,
                           mixed_precision="no")


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


def test_cli_prints_json_and_markdown_and_writes_the_report(tmp_path, tiny_bert_dir, jigsaw_csv, capsys):
    out = tmp_path / "speed.json"
    assert main(["train-speed", "--model", str(tiny_bert_dir), "--data", str(jigsaw_csv), "--examples", "48",
                 "--batch-size", "16", "--max-length", "16", "--json-out", str(out), "--no-tracking"]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    start = printed.index('{\n  "bench": "train-speed"')
    assert json.loads(printed[start : printed.index("\n}\n", start) + 2]) == written
    assert "| hf_trainer_fp32 |" in printed and written["bench"] == "train-speed"
