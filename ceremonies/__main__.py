import sys

from ceremonies.cli import main

sys.exit(main())
