"""``python -m devtools``: start the offline stack (see :mod:`devtools.offline_stack`)."""

import sys

from devtools.offline_stack import main

sys.exit(main())
