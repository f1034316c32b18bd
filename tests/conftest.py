"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest
from helpers import CLI


@pytest.fixture
def cli(tmp_path) -> CLI:
    return CLI(tmp_path)
