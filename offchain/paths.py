"""Where the project's own files are, found from this package so it works from any directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("FRAMELEDGER_REPO", Path(__file__).resolve().parent.parent))
ARTIFACTS_DIR = REPO_ROOT / "contracts" / "artifacts"
NODE_MODULES = REPO_ROOT / "node_modules"
CHAIN_DIR = REPO_ROOT / "chain"
DEFAULT_PLAN = CHAIN_DIR / "consortium.json"
DEPLOYMENTS_DIR = CHAIN_DIR / "deployments"
ANVIL_BIN = NODE_MODULES / ".bin" / "anvil"
