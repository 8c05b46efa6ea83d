"""`bench` — latency, accuracy, table, select, load, report, train-speed."""

from __future__ import annotations

import sys

from compress.clikit import make_main

# Adding a subcommand is one new module in bench/commands plus one name here.
COMMANDS = ("train_speed", "latency", "accuracy", "table", "select", "load", "report", "serve_speed", "quant_speed")

main = make_main("bench", __doc__.splitlines()[0], "bench", COMMANDS)

if __name__ == "__main__":
    sys.exit(main())
