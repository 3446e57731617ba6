"""``python -m napari_sslseg``: the command line (also what ``torchrun -m napari_sslseg`` starts)."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned worker process (study --workers) imports it again
    sys.exit(main())
