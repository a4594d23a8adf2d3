"""``python -m bench``: the end-to-end benchmark (bench/harness.py)."""

import sys

from bench.harness import main

sys.exit(main())
