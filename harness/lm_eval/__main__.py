"""`python -m harness.lm_eval ...`: lm_eval's command line with the `orthrus` model and the offline tasks."""

import sys

from . import main

sys.exit(main())
