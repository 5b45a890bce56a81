"""`python -m benchmark.cli`: the `ctxray-bench` command line."""

import sys

from benchmark.cli import main

sys.exit(main())
