"""``python -m custody_server``: see :mod:`custody_server.serve`."""

import sys

from custody_server.serve import main

sys.exit(main())
