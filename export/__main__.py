"""`python -m export` runs the `export` command (an entry point, not a library module: the import
check lets it reach the command layer above)."""

import sys

from modcompress.cli import export_main

sys.exit(export_main())
