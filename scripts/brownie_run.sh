#!/usr/bin/env bash
# Run Brownie offline from the repo root, in its own venv (see docs/BROWNIE.md).
#
#   scripts/brownie_run.sh --network development     = brownie run scripts/deploy.py --network development
#   scripts/brownie_run.sh networks list             any other brownie command, passed through
#
# It puts node_modules/.bin first on PATH (Brownie's development network runs `anvil`), installs
# the solc-js shim into ~/.solcx (a no-op when current), and points HTTP(S)_PROXY at a closed
# loopback port so that anything that tries to download (a compiler, a package) fails at once;
# loopback RPC is exempt through NO_PROXY. Set FRAMELEDGER_BROWNIE_PROXY_GUARD=0 to reach a
# non-local RPC node, and add its host to NO_PROXY yourself if you keep the guard.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BROWNIE="$ROOT/.venv-brownie/bin/brownie"
if [ ! -x "$BROWNIE" ]; then
  echo "error: $BROWNIE not found; run \`make brownie-env\` first" >&2
  exit 1
fi
if [ ! -e "$ROOT/node_modules/solc/solc.js" ]; then
  echo "error: node_modules/solc not found; run \`make js-deps\` (npm ci) first" >&2
  exit 1
fi

export PATH="$ROOT/node_modules/.bin:$ROOT/.venv-brownie/bin:$PATH"
"$ROOT/.venv-brownie/bin/python" "$ROOT/scripts/solc_shim.py" install --quiet

if [ "${FRAMELEDGER_BROWNIE_PROXY_GUARD:-1}" != "0" ]; then
  guard="http://127.0.0.1:9"   # discard port: nothing listens there
  export HTTP_PROXY="$guard" HTTPS_PROXY="$guard" http_proxy="$guard" https_proxy="$guard"
  loop="127.0.0.1,localhost,::1"
  export NO_PROXY="${NO_PROXY:+$NO_PROXY,}$loop" no_proxy="${no_proxy:+$no_proxy,}$loop"
fi

if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  exec "$BROWNIE" run scripts/deploy.py "$@"
fi
exec "$BROWNIE" "$@"
