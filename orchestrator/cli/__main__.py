"""``python -m orchestrator.cli`` = the ``matscreen`` console script."""
import sys

from orchestrator.cli import main

sys.exit(main())
