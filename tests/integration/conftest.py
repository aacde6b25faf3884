"""Fixtures shared by the integration modules."""

from __future__ import annotations

import pytest
from evidence_fixtures import evidence_ledger


@pytest.fixture(scope="module")
def ev(devchain, w3, base_deployment, tmp_path_factory):
    """The shared evidence ledger (evidence_fixtures), module scope, reverted afterwards."""
    with evidence_ledger(devchain, w3, base_deployment, tmp_path_factory) as ledger:
        yield ledger
