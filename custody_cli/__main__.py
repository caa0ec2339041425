import sys

from custody_cli import main

sys.exit(main())
