"""`python -m tidegate` is the `tidegate` command."""

import sys

from tidegate.cli import main

sys.exit(main())
