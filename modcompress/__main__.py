"""`python -m modcompress TOOL ...`: TOOL is compress, export, serve or bench."""

import sys

from modcompress.cli import bench_main, compress_main, export_main, serve_main

TOOLS = {"compress": compress_main, "export": export_main, "serve": serve_main, "bench": bench_main}

if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
    print(f"usage: python -m modcompress {{{','.join(TOOLS)}}} ...", file=sys.stderr)
    sys.exit(2)
sys.exit(TOOLS[sys.argv[1]](sys.argv[2:]))
