# FrameLedger: `make demo` runs the main job, `make test` runs the tests.
# Both install what they need on first use (a .venv from pyproject.toml, node_modules from
# package-lock.json) and skip the install when it is already current.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# `make test` runs its test files in two pytest-xdist workers (whole files per worker, so a
# module's fixtures are built once): most tests wait on chains, nodes and streams, not the CPU,
# and two workers took the suite from ~24 to ~13 minutes on this 2-core machine (README).
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

.PHONY: demo test soak lint system-deps deps py-deps js-deps brownie-env rtsp-deps browser-deps ffmpeg-deps artifacts bench clean

demo: deps
	$(BIN)/frameledger demo

test: deps brownie-env lint system-deps
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Debian's packages the live-camera and signing-page tests need, installed once before the
# workers start (two workers must not both run apt). A failure here is not fatal: the tests that
# need a missing package then say what is missing.
system-deps:
	-@$(MAKE) --no-print-directory rtsp-deps browser-deps

# Long forms of the fault and load tests (seeded kill -9 x 50, ...): not part of `make test`.
soak: deps brownie-env
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

# ruff (pyflakes + bugbear) everywhere; mypy --strict on the pure core and the chain access.
lint: py-deps
	$(BIN)/ruff check offchain api tests bench scripts
	$(BIN)/mypy --strict offchain/core offchain/chain

deps: py-deps js-deps

py-deps: $(VENV)/.installed
js-deps: node_modules/.installed

$(VENV)/.installed: pyproject.toml offchain/core/_native.c offchain/core/_gather.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Brownie pins ~70 exact versions (web3 7.16.0 among them), so it lives in its own venv.
brownie-env: .venv-brownie/.installed
.venv-brownie/.installed: scripts/brownie-requirements.txt
	test -x .venv-brownie/bin/python || $(PYTHON) -m venv .venv-brownie
	.venv-brownie/bin/python -m pip install --quiet --upgrade pip
	.venv-brownie/bin/python -m pip install --quiet -r scripts/brownie-requirements.txt
	touch $@

# A real RTSP server for the live-camera tests (GStreamer's, from Debian); the RTSP test calls
# this on first use. Needs root (or sudo) and apt; the stamp keeps it to once per machine.
RTSP_PKGS := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-rtsp
rtsp-deps:
	@/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends $(RTSP_PKGS) \
	       || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends $(RTSP_PKGS); }; }

# Debian's Chromium and ChromeDriver for the signing-page test, which calls this on first use
# (never `playwright install`/Selenium Manager downloads). Needs root (or sudo) and apt.
BROWSER_PKGS := chromium chromium-driver
browser-deps:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends $(BROWSER_PKGS) \
	       || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends $(BROWSER_PKGS); }; }

# Debian's ffmpeg, the reference the extraction bench times (`ffmpeg -c copy` of the same packets);
# the bench calls this on first use. Needs root (or sudo) and apt.
FFMPEG_PKGS := ffmpeg
ffmpeg-deps:
	@test -x /usr/bin/ffmpeg \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends $(FFMPEG_PKGS) \
	       || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends $(FFMPEG_PKGS); }; }

# Recompile contracts/ with solc-js into contracts/artifacts/ (committed).
artifacts: js-deps
	node scripts/compile.js

bench: deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-brownie node_modules
