#!/usr/bin/env python3
"""Entry point: see ``facelandmarks/cli/models.py`` (also installed as ``facelandmarks-models``)."""

import sys

from facelandmarks.cli.models import main

if __name__ == "__main__":
    sys.exit(main())
