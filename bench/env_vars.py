"""What encrypted env vars cost a deploy: decrypting a release's env at container start.

What it measures
----------------
In one process, on a throwaway SQLite database (same Store, same WAL settings as the
server) and a fresh master key: an app with N env vars of 40 bytes (N = 1, 10, 50, 200)
and one deployment that copied them. Each round times, side by side,

    baseline   store.deployment_env_values(id)   (the same query, ciphertext only)
    rivetr     env_vars.for_deployment(id)       (that query + AES-256-GCM decryption)

which is exactly what the starting stage adds before `docker run`. Medians over --rounds
(default 300) rounds, alternating the two so machine noise hits both alike.

Reading the output
------------------
One line per N: both medians in ms and their ratio; the last column puts rivetr's
figure against a container start (≈270 ms, measured here by hand with docker-py's
containers.run + reload) to show the share of a deploy it takes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from rivetr_git.secrets.crypto import Cipher
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.store.database import Store

CONTAINER_START_MS = 270.0


async def measure(n: int, rounds: int, directory: Path) -> tuple[float, float]:
    store = await Store.open(directory / f"bench-{n}.db")
    try:
        env = EnvVars(store, Cipher.generate())
        app = await store.create_app(f"app{n}")
        await env.set(app.name, {f"VAR_{i}": f"value-{i:04d}-" + "x" * 29 for i in range(n)})
        deployment = await store.create_deployment(app, "0" * 40, "bench", None)
        assert len(await env.for_deployment(deployment.id)) == n
        base, ours = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            await store.deployment_env_values(deployment.id)
            base.append(time.perf_counter() - began)
            began = time.perf_counter()
            await env.for_deployment(deployment.id)
            ours.append(time.perf_counter() - began)
        return statistics.median(base) * 1000, statistics.median(ours) * 1000
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    print(
        f"{'vars':>5}  {'baseline ms':>11}  {'rivetr ms':>9}  {'ratio':>6}  "
        f"{'share of a container start':>26}"
    )
    with tempfile.TemporaryDirectory(prefix="rivetr-bench-env-") as tmp:
        for n in (1, 10, 50, 200):
            base, ours = asyncio.run(measure(n, args.rounds, Path(tmp)))
            print(
                f"{n:>5}  {base:>11.3f}  {ours:>9.3f}  {ours / base:>6.2f}  "
                f"{ours / CONTAINER_START_MS:>25.2%}"
            )


if __name__ == "__main__":
    main()
