#!/usr/bin/env python3
"""Entry point: see ``facelandmarks/cli/evaluate.py`` (also installed as ``facelandmarks-evaluate``)."""

import sys

from facelandmarks.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
