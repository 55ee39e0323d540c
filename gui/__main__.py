"""``python -m gui``: what ``parley gui`` runs (node/ never imports the GUI; it execs this)."""

import sys

from gui.app import main

sys.exit(main(sys.argv[1:]))
