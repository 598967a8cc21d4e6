"""The fault suite's one shared thing: a finished smoke experiment, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.workspace import build_template


@pytest.fixture(scope="session")
def fault_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory.mktemp("faults"))
