"""``python -m antlr_snn`` runs the command line (see :mod:`antlr_snn.cli`)."""
import sys

from antlr_snn.cli import main

if __name__ == "__main__":
    sys.exit(main())
