"""The fault suite's one shared thing: a finished smoke experiment, built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fault_template(smoke_template: Path) -> Path:
    """The session's finished smoke experiment (tests/conftest.py), shared with the
    other tests that need one, so the suite trains it once."""
    return smoke_template
