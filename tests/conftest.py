"""Shared test fixtures: where the real face data lives."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA_DIR = Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


def pytest_sessionstart(session):
    if not (DATA_DIR / "300w").is_dir():
        raise pytest.UsageError(
            f"real face data not found at {DATA_DIR}; set FACE_DATA_DIR to the folder holding 300w/, muct/, youtube68/ ..."
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR
