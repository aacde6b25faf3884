"""Run all benchmarks: every module `bench/<name>_bench.py` that defines `main(argv) -> int`.

    python -m bench                  # all of them, in name order
    python -m bench extract          # only bench/extract_bench.py
    python -m bench extract -- --minutes 2    # arguments after `--` go to each selected bench

Benches are discovered rather than listed so that adding one is adding a file.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def discover() -> list[str]:
    return sorted(p.stem[: -len("_bench")] for p in HERE.glob("*_bench.py"))


def main(argv: list[str]) -> int:
    names, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    available = discover()
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown bench {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    worst = 0
    for name in names or available:
        print(f"\n=== bench: {name} ===", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}_bench")
        code = int(module.main(list(extra)) or 0)
        print(f"=== {name}: exit {code} in {time.monotonic() - started:.1f} s ===", flush=True)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
