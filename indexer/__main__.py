"""``python -m indexer PATH...``: the indexer without the rest of the ``photoscore`` command."""

import sys

from indexer.cli import main

if __name__ == "__main__":
    sys.exit(main())
