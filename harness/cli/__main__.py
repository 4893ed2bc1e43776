"""`python -m harness.cli ...` is `orthrus-bench ...` (what launchers such as torchrun start)."""

import sys

from . import main

sys.exit(main())
