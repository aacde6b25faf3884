"""Half-open connection flood, run as its own process by test_ingest.py (so the attacker's CPU is
not the honest camera's): ``python ingest_flood.py HOST PORT TOTAL SOURCES``. Holds TOTAL
connections that never say hello, from SOURCES loopback addresses (127.0.0.10, .11, ...),
re-opening each as soon as the node closes it, until stdin closes. Prints "HOLDING n" once a
second."""

from __future__ import annotations

import asyncio
import sys


async def main(host: str, port: int, total: int, sources: int) -> None:
    held = [0]
    stop = asyncio.Event()
    per = max(1, total // sources)

    async def one(src: str) -> None:
        while not stop.is_set():
            try:
                r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            held[0] += 1
            try:
                while await r.read(65536):  # the challenge, then EOF when the node closes
                    pass
            except OSError:
                pass
            finally:
                held[0] -= 1
                w.transport.abort()

    async def watch_stdin() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        stop.set()

    async def report() -> None:
        while not stop.is_set():
            print(f"HOLDING {held[0]}", flush=True)
            await asyncio.sleep(1.0)

    tasks = [asyncio.ensure_future(one(f"127.0.0.{10 + i // per}")) for i in range(per * sources)]
    await asyncio.gather(watch_stdin(), report())
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
