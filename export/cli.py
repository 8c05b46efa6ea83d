"""`export` — onnx, tensorrt, triton (run it as `modcompress-export` or `python -m export`: in bash `export` is a builtin)."""

from __future__ import annotations

import sys

from compress.clikit import make_main

# Adding a subcommand is one new module in export/commands plus one name here.
COMMANDS = ("onnx", "tensorrt", "triton")

main = make_main("export", __doc__.splitlines()[0], "export", COMMANDS)

if __name__ == "__main__":
    sys.exit(main())
