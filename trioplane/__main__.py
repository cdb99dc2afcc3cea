import sys

from trioplane.cli import main

sys.exit(main())
