#!/usr/bin/env python3
"""Entry point: see ``facelandmarks/cli/datagen.py`` (also installed as ``facelandmarks-datagen``)."""

import sys

from facelandmarks.cli.datagen import main

if __name__ == "__main__":
    sys.exit(main())
