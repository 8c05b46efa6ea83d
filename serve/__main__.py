"""`python -m serve` runs the `serve` command."""

import sys

from serve.cli import main

sys.exit(main())
