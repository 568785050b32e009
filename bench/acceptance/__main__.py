"""`python -m bench.acceptance` = scripts/gpu_acceptance.sh."""

import sys

from bench.acceptance.main import main

sys.exit(main())
