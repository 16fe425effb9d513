"""``python -m launcher`` is the ``launcher`` console script."""
import sys

from launcher.cli import main

sys.exit(main())
