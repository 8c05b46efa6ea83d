"""`python -m serve` runs the `serve` command (an entry point, not a library module: the import
check lets it reach the command layer above)."""

import sys

from modcompress.cli import serve_main

sys.exit(serve_main())
