"""`python -m exthandler`."""

import sys

from ._cli.main import main

sys.exit(main())
