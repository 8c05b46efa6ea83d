"""`python -m export ...` (bash's builtin `export` shadows the console script of the same name)."""

import sys

from export.cli import main

sys.exit(main())
