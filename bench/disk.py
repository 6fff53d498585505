"""Disk use of one app over many deploys: does rivetr's keep-N rule bound it?

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, ports picked by the OS, defaults but
RIVETR_KEEP_RELEASES=--keep, default 3, i.e. the server's default) and the tiny
FROM-scratch busybox httpd app. --deploys deploys in a row (default 30), each a commit
that changes www/index.html and www/payload.bin (--payload-kb random bytes, default 256,
so a release's own layer is big enough to see). After deploy 1 and every 5th deploy
(once the server's background prune of old images and retire of old containers have had
their turn, at most 10 s) it counts:

* images: the tags rivetr-<instance>/disk:<deployment> (`docker images`); bound: keep;
* containers: the instance's containers, any state; bound: 2 (the live one, plus the one
  it replaced, which runs until the watch window (10 s) or the next switch ends; for a
  moment after a switch the one replaced before that is still being stopped);
* release bytes: the bytes of the unique layers of those tagged images (`docker history`
  sizes, each layer counted once; the busybox layer all releases share counts once);
  bound: shared layers + keep x the largest release's own layers;
* leftover images/bytes: images this run's builds created (recorded from each release's
  `docker history` while it was still tagged) that still exist but belong to no tagged
  release. The server removes an old release's tag without pruning its parents (on
  purpose: a concurrent build may just have taken one of them from the layer cache), so
  each pruned release leaves its COPY www step image and the metadata-step image above
  it (dangling: untagged, no children), with the release's own layer, behind.
* container bytes: the writable layers of the app's containers (`docker inspect --size`).

Reading the output
------------------
A table, one row per sample, then the verdicts: tagged images and release bytes within
the keep-N bound at every sample (the target), and, to be honest about what keep-N does
not cover, how fast the leftovers grow (bytes per deploy; they are not bounded). Last, the
engine-wide `docker system df` Images/Build Cache lines and the count of dangling images
before and after (other users of the engine change those too; this run's share is the
leftover column), the daemon's warnings, and the cleanup, which also removes the
leftovers (images that existed before the run, or that other images now build on, stay).

Run from the project root:  .venv/bin/python bench/disk.py [--deploys 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    AppRepo,
    BenchError,
    BuildLeftovers,
    Server,
    bench_main,
    build_leftovers,
    deployment_id,
    failure_reason,
    history,
    report_server_health,
    run,
    workspace,
)

APP = "disk"
SAMPLE_EVERY = 5
MAX_CONTAINERS = 2
MAX_SECONDS = 270.0


@dataclass
class Sample:
    deploys: int
    images: int
    containers: int
    release_bytes: int
    bound_bytes: int
    leftover_images: int
    leftover_dangling: int
    leftover_bytes: int
    container_bytes: int


def layer_bytes(images: Sequence[str]) -> tuple[int, int, int]:
    """(unique layer bytes of `images`, bytes of layers all of them share, largest bytes
    one image has on its own)."""
    sizes: dict[str, int] = {}
    users: dict[str, int] = {}
    per_image: list[set[str]] = []
    for image in images:
        mine: set[str] = set()
        for index, (image_id, size) in enumerate(history(image)):
            key = image_id if image_id.startswith("sha256:") else f"{image}#{index}"
            sizes[key] = size
            mine.add(key)
        for key in mine:
            users[key] = users.get(key, 0) + 1
        per_image.append(mine)
    shared = sum(sizes[k] for k, n in users.items() if n == len(images))
    own = max(
        (sum(sizes[k] for k in mine if users[k] < len(images)) for mine in per_image), default=0
    )
    return sum(sizes.values()), shared, own


def container_bytes(ids: Sequence[str]) -> int:
    if not ids:
        return 0
    # No check: a container being retired may be gone by now; the others are still printed.
    proc = subprocess.run(
        ["docker", "inspect", "--size", "--format", "{{.SizeRw}}", *ids],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return sum(int(v) for v in proc.stdout.decode().split() if v.isdigit())


def dangling_ids() -> set[str]:
    return set(run(["docker", "images", "-f", "dangling=true", "-q", "--no-trunc"]).split())


def system_df() -> list[str]:
    out = run(
        [
            "docker",
            "system",
            "df",
            "--format",
            "{{.Type}}: total {{.TotalCount}}, active {{.Active}}, size {{.Size}}, "
            "reclaimable {{.Reclaimable}}",
        ]
    )
    return [ln for ln in out.splitlines() if ln.startswith(("Images", "Build Cache"))]


def engine_state() -> list[str]:
    all_images = len(run(["docker", "images", "-a", "-q"]).split())
    return [
        *system_df(),
        f"all images (docker images -a): {all_images}, dangling: {len(dangling_ids())}",
    ]


def wait_settled(server: Server, keep: int, timeout: float = 10) -> None:
    """Give the server's background work its turn: the prune of old release images runs
    right after each switch, and the retire of the release replaced two switches ago
    (drain, stop, remove) starts at the switch, so a third container may still be there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        len(server.app_images(APP)) > keep or len(server.app_containers(APP)) > MAX_CONTAINERS
    ):
        time.sleep(0.1)


def sample(server: Server, leftovers: BuildLeftovers, deploys: int, keep: int) -> Sample:
    wait_settled(server, keep)
    tags = server.app_images(APP)
    containers = server.app_containers(APP)
    total, shared, own = layer_bytes(tags)
    left = leftovers.leftovers(tags)
    dangling = dangling_ids()
    return Sample(
        deploys=deploys,
        images=len(tags),
        containers=len(containers),
        release_bytes=total,
        bound_bytes=shared + keep * own,
        leftover_images=len(left),
        leftover_dangling=sum(1 for i in left if i in dangling),
        leftover_bytes=sum(r.layer_bytes for r in left.values()),
        container_bytes=container_bytes([c[0] for c in containers]),
    )


HEADER = (
    "deploys  images  containers  release bytes   bound bytes  leftover imgs (dangling)"
    "  leftover bytes  container bytes"
)


def print_sample(s: Sample, keep: int) -> None:
    flag = "" if s.images <= keep and s.release_bytes <= s.bound_bytes else "  <- over bound"
    print(
        f"{s.deploys:7d}  {s.images:3d}/{keep:<2d} {s.containers:6d}/{MAX_CONTAINERS}  "
        f"{s.release_bytes:13,d}  {s.bound_bytes:12,d}  {s.leftover_images:13d} "
        f"({s.leftover_dangling:3d})    {s.leftover_bytes:14,d}  {s.container_bytes:15,d}"
        f"{flag}",
        flush=True,
    )


def deploy(server: Server, repo: AppRepo, number: int, nonce: str, payload: int) -> int:
    repo.write("www/payload.bin", os.urandom(payload))
    repo.commit(f"deploy {number} {nonce}")
    result = server.push(repo, APP)
    if result.returncode != 0:
        raise BenchError(f"deploy {number} failed: {failure_reason(result.output)}")
    found = deployment_id(result.output)
    if found is None:
        raise BenchError(f"deploy {number}: no deployment number in the push output")
    return found


def verdicts(samples: list[Sample], keep: int, payload: int) -> bool:
    images_ok = all(s.images <= keep for s in samples)
    bytes_ok = all(s.release_bytes <= s.bound_bytes for s in samples)
    containers_ok = all(s.containers <= MAX_CONTAINERS for s in samples)
    first, last = samples[0], samples[-1]
    print(
        f"\ntagged release images <= keep_releases ({keep}) at every sample: "
        f"{'yes' if images_ok else 'NO'} (max {max(s.images for s in samples)})"
    )
    print(
        f"release bytes <= shared + keep x largest release's own layers at every sample: "
        f"{'yes' if bytes_ok else 'NO'} (last {last.release_bytes:,d} <= "
        f"{last.bound_bytes:,d})"
    )
    print(
        f"containers <= {MAX_CONTAINERS} at every sample: "
        f"{'yes' if containers_ok else 'NO'} (max {max(s.containers for s in samples)})"
    )
    ok = images_ok and bytes_ok and containers_ok
    print(f"target: disk use of the app's releases bounded by keep-N: {'met' if ok else 'MISSED'}")
    # Growth per deploy once every deploy prunes one release (deploy keep+1 on).
    start = next((s for s in samples if s.deploys > keep), first)
    grown = last.deploys - start.deploys
    if grown > 0:
        per = (last.leftover_bytes - start.leftover_bytes) / grown
        print(
            f"not covered by keep-N: {last.leftover_images} leftover untagged build images "
            f"({last.leftover_dangling} dangling) holding {last.leftover_bytes:,d} bytes after "
            f"{last.deploys} deploys, growing {per:,.0f} bytes per deploy (payload "
            f"{payload:,d} bytes + index.html): {'unbounded' if per > 0 else 'flat'}"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=30, help="deploys (default 30)")
    parser.add_argument(
        "--keep",
        type=int,
        default=3,
        help="RIVETR_KEEP_RELEASES for the daemon (default 3, its default)",
    )
    parser.add_argument(
        "--payload-kb",
        type=int,
        default=256,
        help="KiB of random bytes each release adds (default 256)",
    )
    parser.add_argument(
        "--save-log", type=Path, metavar="FILE", help="copy the daemon's log here before cleanup"
    )
    args = parser.parse_args()
    if not 1 <= args.deploys <= 100:
        parser.error("--deploys must be from 1 to 100")
    if not 1 <= args.keep <= 20:
        parser.error("--keep must be from 1 to 20")
    if not 0 <= args.payload_kb <= 4096:
        parser.error("--payload-kb must be from 0 to 4096")
    payload = args.payload_kb * 1024
    nonce = uuid.uuid4().hex[:8]
    began = time.monotonic()
    print("engine before:")
    for line in engine_state():
        print(f"  {line}")
    with build_leftovers() as leftovers, workspace("rivetr-bench-disk-", args.save_log) as server:
        server.start(settings={"RIVETR_KEEP_RELEASES": str(args.keep)})
        print(
            f"\nrivetr-git serve pid {server.pid}, instance {server.instance}, workdir "
            f"{server.workdir}; keep_releases {args.keep}, other settings at their defaults"
        )
        repo = AppRepo.create(server.workdir / "app", f"deploy 0 {nonce}")
        print(HEADER)
        samples: list[Sample] = []
        for number in range(1, args.deploys + 1):
            if time.monotonic() - began > MAX_SECONDS:
                print(
                    f"  ! time budget ({MAX_SECONDS:g} s) used: stopping after {number - 1} deploys"
                )
                break
            found = deploy(server, repo, number, nonce, payload)
            leftovers.record(f"rivetr-{server.instance}/{APP}:{found}")
            if number == 1 or number % SAMPLE_EVERY == 0 or number == args.deploys:
                samples.append(sample(server, leftovers, number, args.keep))
                print_sample(samples[-1], args.keep)
        ok = verdicts(samples, args.keep, payload) if samples else False
        print("\nengine after (before cleanup):")
        for line in engine_state():
            print(f"  {line}")
        print()
        # The last release's predecessor runs until its 10 s watch window is over.
        report_server_health(server, expected_containers=2)
    print("engine after cleanup:")
    for line in engine_state():
        print(f"  {line}")
    print(f"total {time.monotonic() - began:.1f}s")
    return 0 if ok else 2


if __name__ == "__main__":
    bench_main("disk", main, (subprocess.SubprocessError,))
