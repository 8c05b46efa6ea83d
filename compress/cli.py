"""`compress` — train, distill, quantize, tune, baseline, quickstart, data stats."""

from __future__ import annotations

import sys

from compress.clikit import make_main

# Adding a subcommand is one new module in compress/commands plus one name here.
COMMANDS = ("data", "train", "tune", "distill", "baseline", "distill_report", "quantize", "quickstart")

main = make_main("compress", __doc__.splitlines()[0], "compress", COMMANDS)

if __name__ == "__main__":
    sys.exit(main())
