#!/usr/bin/env python3
"""Entry point: see ``facelandmarks/cli/export.py`` (also installed as ``facelandmarks-export``)."""

import sys

from facelandmarks.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
