"""The signing page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
a party signs in with a test key, sees the session blocked by a risk warning (button disabled,
with the reason), the warning clears, and a real click signs the agreement on chain. Screenshots
are saved next to the test's temporary files."""

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
from api_fixtures import BANK, CAMS, CUSTOMER, NODE, Api
from offchain.chain.devchain import free_loopback_port
from offchain.chain.sessions import SigningSessionClient
from offchain.paths import REPO_ROOT

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_RELAYER = 10  # its own relayer account: the fixture's app keeps its own nonce for account 9


@pytest.fixture
def page_server(chain_env, devchain, tmp_path):
    """The API on a real loopback port, its SIWE domain that host, served by uvicorn in a thread."""
    port = free_loopback_port()
    path = tmp_path / "page-deployment.json"
    path.write_text(json.dumps(chain_env.deployment.record))
    app = create_app(devchain.rpc_url, str(path), relayer_key=chain_env.keys[PAGE_RELAYER],
                     settings=Settings(siwe_domain=f"127.0.0.1:{port}"))
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


def test_a_real_click_signs_once_the_risk_warning_clears(api: Api, page_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    bank, customer = api.token(BANK), api.token(CUSTOMER)
    sid, r = api.propose(bank)
    assert r.status_code == 201
    api.respond(sid, customer, CUSTOMER)
    api.chain.ledger(NODE).raise_risk(CAMS[0], "stream unhealthy at every node", 60_000)

    wait = WebDriverWait(browser, 30)
    browser.get(f"{page_server}/sign?session={sid}")
    browser.find_element(By.ID, "key").send_keys(api.key(BANK))
    browser.find_element(By.ID, "signin").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "reason"), "risk warning"))
    sign = browser.find_element(By.ID, "sign")
    assert not sign.is_enabled()
    assert browser.find_element(By.ID, "status").text == "formed"
    assert api.addr(BANK) in browser.find_element(By.ID, "who").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#blocks tbody tr")) == 4
    blocked = tmp_path / "signing-page-risk.png"
    browser.save_screenshot(str(blocked))

    api.chain.ledger(NODE).clear_risk(CAMS[0])
    wait.until(ec.element_to_be_clickable((By.ID, "sign")))
    browser.find_element(By.ID, "sign").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "signed"), "1 of 2"))
    assert "You have signed" in browser.find_element(By.ID, "reason").text
    signed = tmp_path / "signing-page-signed.png"
    browser.save_screenshot(str(signed))
    for shot in (blocked, signed):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = os.environ.get("FRAMELEDGER_SCREENSHOTS")
    if artifacts:  # keep them for a human (e.g. the demo or CI artifacts)
        for shot in (blocked, signed):
            shutil.copy(shot, artifacts)

    sessions = SigningSessionClient(api.chain.signer(0), api.chain.deployment.signing_session)
    sid_bytes = bytes.fromhex(sid[2:])
    assert sessions.party_state(sid_bytes, api.addr(BANK)).signed
    assert len(sessions.signature_of(sid_bytes, api.addr(BANK))) == 65
