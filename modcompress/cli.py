"""The four console scripts. Adding a subcommand is one module in ``modcompress/commands/<tool>/``
plus one name in its tuple here."""

from __future__ import annotations

from modcompress.clikit import make_main

COMPRESS = ("data", "train", "tune", "distill", "baseline", "distill_report", "quantize", "quickstart")
EXPORT = ("onnx", "tensorrt", "triton")
SERVE = ("start", "check", "score")
BENCH = ("train_speed", "latency", "accuracy", "table", "select", "load", "report", "serve_speed", "quant_speed",
         "score_speed")

compress_main = make_main("compress", "train, distill, quantize, tune, baseline, quickstart, data stats.",
                          "modcompress.commands.compress", COMPRESS)
export_main = make_main("export", "onnx, tensorrt, triton (run it as `modcompress-export` or `python -m export`: "
                                  "in bash `export` is a builtin).", "modcompress.commands.export", EXPORT)
serve_main = make_main("serve", "start a Triton server for artifacts, smoke-check a running one, or score a "
                                "file in batch.",
                       "modcompress.commands.serve", SERVE)
bench_main = make_main("bench", "latency, accuracy, table, select, load, report, train-speed, serve-speed, "
                                "quant-speed, score-speed.", "modcompress.commands.bench", BENCH)
