"""The `api` fixture: an API on the session's Anvil with two cameras and anchored blocks."""

from __future__ import annotations

import pytest

from api_fixtures import BANK, CUSTOMER, FOUNDER, IPS, W, Api, make_api


@pytest.fixture
def api(chain_env, devchain, tmp_path) -> Api:
    chain_env.consortium(BANK).register_camera(IPS[0], b"\x01" * 32, b"\x02" * 32)
    chain_env.consortium(CUSTOMER).register_camera(IPS[1], b"\x03" * 32, b"\x04" * 32)
    chain_env.consortium(FOUNDER).seal_genesis()
    a = make_api(chain_env, devchain, tmp_path)
    for cam in (0, 1):
        a.anchor(cam, 1, W)
        a.anchor(cam, 2, 2 * W)
    return a
