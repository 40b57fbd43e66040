"""`python -m exthandler`."""

import sys

from ._cli import main

sys.exit(main())
