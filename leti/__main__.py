import sys

from leti.cli import main

sys.exit(main())
