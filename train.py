#!/usr/bin/env python3
"""Entry point: see ``facelandmarks/cli/train.py`` (also installed as ``facelandmarks-train``)."""

import sys

from facelandmarks.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
