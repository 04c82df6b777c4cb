"""``python -m client``: the seqwatch command line (same as the ``seqwatch`` script)."""

import sys

from client.cli import main

if __name__ == "__main__":
    sys.exit(main())
