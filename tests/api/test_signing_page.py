"""The signing page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
a party signs in with a test key, the page extracts the session's evidence (real anchored video,
tests/api/evidence_session.py) and plays each camera's verified clips with the verdict and the
declared gap, sees the session blocked by a risk warning (button disabled, with the reason), the
warning clears, and a real click signs the agreement on chain. Screenshots are saved next to the
test's temporary files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from api.app import create_app
from api.context import Settings
from api.evidence_routes import EvidenceSettings
from api_fixtures import BANK, NODE, Api
from evidence_session import build_ledger, evidence_session
from offchain.chain.devchain import free_loopback_port
from offchain.chain.sessions import SigningSessionClient
from offchain.paths import REPO_ROOT

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_RELAYER = 10  # its own relayer account: the fixture's app keeps its own nonce for account 9


@pytest.fixture
def page_ledger(api, chain_env, devchain, tmp_path):
    """Real anchored video of two cameras on this test's chain, frames in a LocalStore."""
    return build_ledger(chain_env.w3, chain_env.keys, chain_env.deployment, tmp_path / "store", devchain.rpc_url)


@pytest.fixture
def page_server(chain_env, devchain, tmp_path, page_ledger):
    """The API on a real loopback port, its SIWE domain that host, served by uvicorn in a thread."""
    port = free_loopback_port()
    path = tmp_path / "page-deployment.json"
    path.write_text(json.dumps(chain_env.deployment.record))
    app = create_app(devchain.rpc_url, str(path), relayer_key=chain_env.keys[PAGE_RELAYER],
                     settings=Settings(siwe_domain=f"127.0.0.1:{port}"), stores=[page_ledger.store()],
                     evidence=EvidenceSettings(work_dir=str(tmp_path / "jobs")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        # The project installs them itself on first use (make browser-deps: Debian's packages).
        subprocess.run(["make", "-C", str(REPO_ROOT), "browser-deps"], capture_output=True, text=True, timeout=900)
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver; `make browser-deps` could not install them here")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_real_click_signs_once_the_risk_warning_clears(api: Api, page_ledger, page_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ev = page_ledger
    sid = evidence_session(api, ev)
    leaves = api.http.get(f"/v1/sessions/{sid}/agreement", headers=api.token(BANK)).json()["leaves"]
    api.chain.ledger(NODE).raise_risk(ev.cam_a, "stream unhealthy at every node", 60_000)

    wait = WebDriverWait(browser, 30)
    browser.get(f"{page_server}/sign?session={sid}")
    browser.find_element(By.ID, "key").send_keys(api.key(BANK))
    browser.find_element(By.ID, "signin").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "reason"), "risk warning"))
    sign = browser.find_element(By.ID, "sign")
    assert not sign.is_enabled()
    assert browser.find_element(By.ID, "status").text == "formed"
    assert api.addr(BANK) in browser.find_element(By.ID, "who").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#blocks tbody tr")) == len(leaves) == 4

    # the verified video: extraction runs, then each camera's clips play, with verdict and gaps
    WebDriverWait(browser, 600).until(ec.text_to_be_present_in_element((By.ID, "verdict"), "verified"))
    verdict = browser.find_element(By.ID, "verdict").text
    assert "10.9.0.1: verified with declared gaps" in verdict and "10.9.0.2: verified" in verdict
    assert browser.find_element(By.ID, "evidence-progress").get_attribute("value") == "1"
    cameras = browser.find_elements(By.CSS_SELECTOR, "#videos section.camera")
    assert [c.get_attribute("data-camera") for c in cameras] == ["0x" + ev.cam_a.hex(), "0x" + ev.cam_b.hex()]
    assert "declared gap" in cameras[0].find_element(By.CSS_SELECTOR, "ul.gaps").text
    assert "frames 250–269" in cameras[0].find_element(By.CSS_SELECTOR, "ul.gaps").text
    ready = "return [...document.querySelectorAll('#videos video')].map(v => [v.readyState, v.duration, v.videoWidth])"
    WebDriverWait(browser, 120).until(lambda b: all(r[0] >= 2 for r in b.execute_script(ready)))
    states = browser.execute_script(ready)
    assert len(states) == 2 and all(duration > 0 and width > 0 for _, duration, width in states), states
    blocked = tmp_path / "signing-page-risk.png"
    browser.save_screenshot(str(blocked))
    browser.execute_script("document.getElementById('verdict').scrollIntoView()")
    video = tmp_path / "signing-page-video.png"
    browser.save_screenshot(str(video))

    api.chain.ledger(NODE).clear_risk(ev.cam_a)
    wait.until(ec.element_to_be_clickable((By.ID, "sign")))
    browser.find_element(By.ID, "sign").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "signed"), "1 of 2"))
    assert "You have signed" in browser.find_element(By.ID, "reason").text
    signed = tmp_path / "signing-page-signed.png"
    browser.save_screenshot(str(signed))
    for shot in (blocked, video, signed):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = os.environ.get("FRAMELEDGER_SCREENSHOTS")
    if artifacts:  # keep them for a human (e.g. the demo or CI artifacts)
        for shot in (blocked, video, signed):
            shutil.copy(shot, artifacts)

    sessions = SigningSessionClient(api.chain.signer(0), api.chain.deployment.signing_session)
    sid_bytes = bytes.fromhex(sid[2:])
    assert sessions.party_state(sid_bytes, api.addr(BANK)).signed
    assert len(sessions.signature_of(sid_bytes, api.addr(BANK))) == 65
