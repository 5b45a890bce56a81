"""`python -m benchmark.bench`: run the speed benchmark."""

import sys

from benchmark.bench import main

sys.exit(main())
