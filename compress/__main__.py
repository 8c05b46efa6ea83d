"""`python -m compress` runs the `compress` command (an entry point, not a library module: the import
check lets it reach the command layer above)."""

import sys

from modcompress.cli import compress_main

sys.exit(compress_main())
