import sys

from reidbench.cli import main

sys.exit(main())
