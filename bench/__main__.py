"""`python -m bench` runs the `bench` command (an entry point, not a library module: the import
check lets it reach the command layer above)."""

import sys

from modcompress.cli import bench_main

sys.exit(bench_main())
