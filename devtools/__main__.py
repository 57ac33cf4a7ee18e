"""``python -m devtools``: start the offline stack (see :mod:`devtools.offline_cli`)."""

import sys

from devtools.offline_cli import main

sys.exit(main())
