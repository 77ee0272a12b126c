"""`python -m pvdm` is the `pvdm` command."""

import sys

from pvdm.cli import main

sys.exit(main())
