"""`python -m multimem_core.cli …` (how the dashboard starts runs)."""

import sys

from multimem_core.cli import main

sys.exit(main())
