#!/usr/bin/env python3
"""A native-solc face for solc-js, so that Brownie (through py-solc-x) can compile offline.

Brownie compiles only through py-solc-x, which runs ``~/.solcx/solc-v<version>`` as if it were
the native solc binary: ``--version`` to learn the version, then ``--standard-json --allow-paths
...`` with the input JSON on stdin. Native solc cannot be downloaded here, but solc-js (the npm
package ``solc``, already in node_modules) can do the same compile. ``install`` writes a small
POSIX shell script at that path that

* answers ``--version`` like native solc (the version string is read from solc-js once, at
  install time, so this answer costs no node start-up);
* forwards ``--standard-json`` to ``node node_modules/solc/solc.js --standard-json --base-path
  <dir>``: the base path is ``--base-path`` if py-solc-x passes one, else the working directory
  (Brownie runs the compiler from the project root), so remapped imports such as
  ``node_modules/@openzeppelin/...`` are read from the project;
* passes the input through a temporary file (solc-js reads stdin with ``readFileSync``, which
  fails with EAGAIN on a pipe once the input outgrows the 64 KiB pipe buffer) and
  writes solc-js's output to a temporary file rather than a pipe (solc-js ends with
  ``process.exit``, which may cut a large piped write short) and drops the non-JSON line solc-js
  prints before the JSON (">>> Cannot retry compilation with SMT ...").

Usage::

    python scripts/solc_shim.py install [--force]   write/refresh the shim (idempotent)
    python scripts/solc_shim.py path                print where the shim goes
    python scripts/solc_shim.py check               run the installed shim on a tiny contract

The shim goes to ``$SOLCX_BINARY_PATH`` if set (py-solc-x honours the same variable), else
``$HOME/.solcx``; HOME is read from the environment, so a test can use a temporary one. Paths to
node and solc.js are resolved at install time and baked into the shim; re-run ``install`` after
moving the checkout (``scripts/brownie_run.sh`` does so on every run; it is a no-op when current).
Only the standard library is used, so any Python 3.8+ can run this file.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = "# frameledger-solc-shim v2"

_SHIM_TEMPLATE = """#!/bin/sh
{marker}
# solc-js behind a native-solc command line, for py-solc-x / Brownie.
# Written by scripts/solc_shim.py install; do not edit (re-run the installer instead).
# solcjs-package: {pkg_version} {solcjs}
NODE={node}
SOLCJS={solcjs_q}
VERSION={version_q}

[ -x "$NODE" ] || NODE=node

base_path=
standard_json=
want_version=
other=
while [ $# -gt 0 ]; do
  case "$1" in
    --version) want_version=1 ;;
    --standard-json) standard_json=1 ;;
    --base-path) shift; base_path="$1" ;;
    --base-path=*) base_path="${{1#--base-path=}}" ;;
    --allow-paths|--include-path) shift ;;   # solc-js reads only below the base path
    --allow-paths=*|--include-path=*) ;;
    -) ;;
    *) other="$other $1" ;;
  esac
  shift
done

if [ -n "$want_version" ]; then
  printf 'solc, the solidity compiler commandline interface\\nVersion: %s\\n' "$VERSION"
  exit 0
fi

if [ -z "$standard_json" ] || [ -n "$other" ]; then
  echo "solc shim (solc-js $VERSION) supports only --version and --standard-json; got:$other" >&2
  exit 1
fi

[ -n "$base_path" ] || base_path=$(pwd)
out=$(mktemp "${{TMPDIR:-/tmp}}/solc-shim.XXXXXX") || exit 1
in=$(mktemp "${{TMPDIR:-/tmp}}/solc-shim-in.XXXXXX") || exit 1
trap 'rm -f "$out" "$in"' EXIT HUP INT TERM
# The input goes through a file: solc-js reads stdin with readFileSync, which fails with EAGAIN
# on a pipe whose writer (py-solc-x) has not yet written everything beyond the 64 KiB pipe buffer.
cat > "$in"
"$NODE" "$SOLCJS" --standard-json --base-path "$base_path" < "$in" > "$out"
rc=$?
if [ $rc -ne 0 ]; then
  cat "$out" >&2
  exit $rc
fi
# solc-js prints informational lines before the JSON document: keep from the first '{{' on.
sed -n '/^{{/,$p' "$out"
"""


def solcx_dir() -> Path:
    """Where py-solc-x looks for compilers: $SOLCX_BINARY_PATH, else $HOME/.solcx."""
    override = os.environ.get("SOLCX_BINARY_PATH")
    if override:
        return Path(override)
    home = os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".solcx"


def solcjs_path(repo: Path = REPO_ROOT) -> Path:
    return repo / "node_modules" / "solc" / "solc.js"


def solcjs_package_version(repo: Path = REPO_ROOT) -> str:
    pkg = repo / "node_modules" / "solc" / "package.json"
    if not pkg.exists():
        raise SystemExit(f"{pkg} not found: run `npm ci` (make js-deps) first")
    return json.loads(pkg.read_text())["version"]


def shim_path(repo: Path = REPO_ROOT) -> Path:
    return solcx_dir() / f"solc-v{solcjs_package_version(repo)}"


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise SystemExit("node not found on PATH: the solc shim runs solc-js with node")
    return str(Path(node).resolve())


def _solcjs_version(node: str, solcjs: Path) -> str:
    out = subprocess.run(
        [node, str(solcjs), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()
    return out[-1].strip()


def _is_current(path: Path, pkg_version: str, solcjs: Path) -> bool:
    """The installed shim is ours and points at this checkout's solc-js of the same version."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return (
        text.startswith("#!/bin/sh\n" + MARKER + "\n")
        and f"# solcjs-package: {pkg_version} {solcjs}\n" in text
        and os.access(path, os.X_OK)
    )


def install(repo: Path = REPO_ROOT, force: bool = False, quiet: bool = False) -> Path:
    """Write $HOME/.solcx/solc-v<version> (see the module doc). Idempotent: a shim that already
    points at this checkout's solc-js is left alone unless `force`."""
    solcjs = solcjs_path(repo).resolve()
    if not solcjs.exists():
        raise SystemExit(f"{solcjs} not found: run `npm ci` (make js-deps) first")
    pkg_version = solcjs_package_version(repo)
    target = solcx_dir() / f"solc-v{pkg_version}"
    if not force and _is_current(target, pkg_version, solcjs):
        if not quiet:
            print(f"solc shim up to date: {target}")
        return target

    node = _node()
    version = _solcjs_version(node, solcjs)
    if not version.startswith(pkg_version + "+commit."):
        raise SystemExit(f"solc-js reports {version!r}, expected {pkg_version}+commit...")
    text = _SHIM_TEMPLATE.format(
        marker=MARKER,
        pkg_version=pkg_version,
        solcjs=solcjs,
        node=shlex.quote(node),
        solcjs_q=shlex.quote(str(solcjs)),
        version_q=shlex.quote(version),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        os.replace(tmp, target)  # atomic: a concurrent reader sees the old or the new shim
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not quiet:
        print(f"installed solc shim {target} -> solc-js {version} ({solcjs})")
    return target


def check(repo: Path = REPO_ROOT) -> None:
    """Compile a tiny contract through the installed shim, the way py-solc-x would."""
    target = shim_path(repo)
    if not target.exists():
        raise SystemExit(f"{target} not installed: run `python scripts/solc_shim.py install`")
    print(subprocess.run([str(target), "--version"], check=True, capture_output=True, text=True).stdout, end="")
    src = "// SPDX-License-Identifier: MIT\npragma solidity >=0.8.0;\ncontract Probe { uint256 public x = 1; }\n"
    std_in = {
        "language": "Solidity",
        "sources": {"Probe.sol": {"content": src}},
        "settings": {"outputSelection": {"*": {"*": ["evm.bytecode.object"]}}},
    }
    proc = subprocess.run(
        [str(target), "--standard-json", "--allow-paths", str(repo)],
        input=json.dumps(std_in), capture_output=True, text=True, cwd=repo,
    )
    if proc.returncode != 0:
        raise SystemExit(f"shim failed ({proc.returncode}): {proc.stderr}")
    out = json.loads(proc.stdout)
    code = out["contracts"]["Probe.sol"]["Probe"]["evm"]["bytecode"]["object"]
    print(f"compiled Probe: {len(code) // 2} bytes of init code")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args.pop(0) if args else "install"
    if cmd == "install":
        install(force="--force" in args, quiet="--quiet" in args)
    elif cmd == "path":
        print(shim_path())
    elif cmd == "check":
        check()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
