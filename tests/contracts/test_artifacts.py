"""The committed artifacts are exactly what solc-js makes of contracts/ today."""

from __future__ import annotations

import json
import shutil
import subprocess

from offchain.paths import ARTIFACTS_DIR, NODE_MODULES, REPO_ROOT


def run_check(root):
    return subprocess.run(["node", str(root / "scripts" / "compile.js"), "--check"], capture_output=True, text=True, timeout=180)


def test_committed_artifacts_are_current():
    result = run_check(REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_source_changes(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts" / "compile.js", tmp_path / "scripts")
    shutil.copytree(REPO_ROOT / "contracts", tmp_path / "contracts")
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    ledger = tmp_path / "contracts" / "VideoLedger.sol"
    ledger.write_text(ledger.read_text().replace("rec.attestations = 1;", "rec.attestations = 2;"))
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert "VideoLedger" in result.stderr and "Consortium" not in result.stderr.split("orphaned")[0]


def test_artifacts_record_the_compiler_settings():
    art = json.loads((ARTIFACTS_DIR / "VideoLedger.json").read_text())
    assert art["compiler"]["version"].startswith("0.8.28")
    assert art["compiler"]["settings"]["evmVersion"] == "cancun"
    assert art["bytecode"].startswith("0x60") and len(art["deployedBytecode"]) > 1000
