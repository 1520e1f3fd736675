"""`python -m cyclestyle ...` is the `cyclestyle` command."""

import sys

from cyclestyle.cli import main

sys.exit(main())
