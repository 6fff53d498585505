"""Push-to-live of other build types and of Podman, side by side with the Dockerfile app on
Docker (the baseline: what bench/push_to_live.py measures).

What it measures
----------------
Three variants, each on a `rivetr-git serve` of its own (own temp data dir):

* dockerfile@docker: the busybox app with its Dockerfile (baseline);
* static@docker: the same page as a static site (public/index.html, no Dockerfile): the
  generated nginx Dockerfile on a local nginx image (tests/helpers.py builds it FROM scratch
  from Debian's nginx, as the tests do: no registry here);
* dockerfile@podman: the baseline app with `runtime = "podman"`.

After a warm-up deploy each (creates the app, fills the layer cache; not counted), every
round commits a new page to each variant and pushes it, in an order that rotates per round
(the machine is noisy). Push-to-live is the time from the start of `git push` until it
exits 0 (it does only once the new release answers through the proxy), then checked with a
GET through the proxy for the new content. The server's own "live in" figure is printed too.

Reading the output
------------------
One line per round (seconds per variant), then medians and each variant's ratio to
dockerfile@docker. There is no target: the ratio says what a build type or runtime costs
over the baseline on this machine. Cleanup removes every container, image and network the
servers made, on Docker and on Podman.

Languages (the built-in builder)
--------------------------------
Then, for each of python, node and go (the apps of tests/lang_apps.py, FROM the local
Debian images of scripts/build-test-images): every round pushes a new app whose manifest
changed (first push: the dependency layer is built) and then a code-only change to it
(the dependency layer is reused), against the same two builds by hand: `docker build` of
an equivalent hand-written Dockerfile (manifests before the source too), `docker run`,
first 200 with the new content (bench/push_to_live.py's ByHand). Printed: medians and the
ratio rivetr / by hand for each (target <= 1.1).

Run from the project root:  .venv/bin/python bench/build_types.py [--rounds 5]
                            [--only types|languages]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import (
    AppRepo,
    BenchError,
    Server,
    failure_reason,
    http_get,
    median,
    run,
    workspace,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from languages import languages

from tests.helpers import nginx_image  # test infra: the local nginx image (no registry)

APP = "bench"
LIVE_IN = re.compile(r"\(live in ([0-9.]+)s\)")
VARIANTS = ("dockerfile@docker", "static@docker", "dockerfile@podman")


class StaticRepo(AppRepo):
    """The same page as a static site: public/index.html, no Dockerfile, no busybox."""

    def commit(self, content: str) -> None:
        for name in ("Dockerfile", "busybox"):
            (self.path / name).unlink(missing_ok=True)
        self.write("public/index.html", f"<p>{content}</p>\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", content)


@contextmanager
def podman_cleanup(server: Server) -> Iterator[None]:
    """What a Podman server made: removed with the podman CLI (workspace() uses docker)."""
    try:
        yield
    finally:
        server.stop()
        label = f"label=rivetr.instance={server.instance}"
        ids = run(["podman", "ps", "-aq", "--filter", label]).split()
        if ids:
            run(["podman", "rm", "-f", *ids])
        images = [
            i
            for i in run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).split()
            if f"rivetr-{server.instance}/" in i
        ]
        if images:
            run(["podman", "rmi", "-f", *images])
        run(["podman", "image", "prune", "-f"])
        print(f"  removed {len(ids)} podman container(s), {len(images)} image(s)")


def deploy(server: Server, repo: AppRepo, content: str) -> tuple[float, float | None]:
    """Commit `content`, push it; (push-to-live, server's live-in). Raises BenchError."""
    repo.commit(content)
    started = time.monotonic()
    result = server.push(repo, APP)
    to_live = time.monotonic() - started
    if result.returncode != 0:
        raise BenchError(f"deploy failed: {failure_reason(result.output)}")
    answer = http_get(server.proxy_port, f"{APP}.localhost")
    if answer is None or answer[0] != 200 or content not in answer[1]:
        raise BenchError(f"push exited 0 but the proxy answered {answer!r}")
    match = next((m for line in result.output if (m := LIVE_IN.search(line))), None)
    return to_live, float(match.group(1)) if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("types", "languages"))
    parser.add_argument(
        "--language", action="append", choices=("python", "node", "go"), help="(repeatable)"
    )
    args = parser.parse_args()
    if args.only != "languages":
        build_types(args.rounds)
    if args.only != "types":
        languages(args.rounds, args.language or ("python", "node", "go"))
    return 0


def build_types(rounds: int) -> None:
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        repos: dict[str, AppRepo] = {}
        image = nginx_image(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        for variant in VARIANTS:
            server = stack.enter_context(workspace(f"rivetr-bench-{variant.split('@')[0]}-"))
            settings = {"RIVETR_WATCH_WINDOW": "1", "RIVETR_STATIC_SERVER_IMAGE": image}
            if variant.endswith("@podman"):
                settings["RIVETR_RUNTIME"] = "podman"
                stack.enter_context(podman_cleanup(server))
            server.start(settings=settings)
            kind = StaticRepo if variant.startswith("static") else AppRepo
            repos[variant] = kind.create(server.workdir / "app", f"warm-up {variant}")
            servers[variant] = server
            deploy(server, repos[variant], f"warm-up 2 {variant}")
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        print(
            f"{'round':>5}  " + "  ".join(f"{v:>20}" for v in VARIANTS) + "   (seconds: "
            "push-to-live / server's live-in)"
        )
        for n in range(rounds):
            order = VARIANTS[n % 3 :] + VARIANTS[: n % 3]
            row = {}
            for variant in order:
                to_live, live_in = deploy(
                    servers[variant], repos[variant], f"round {n} {variant} {time.time()}"
                )
                times[variant].append(to_live)
                row[variant] = f"{to_live:.2f} / {live_in or 0:.2f}"
            print(f"{n + 1:>5}  " + "  ".join(f"{row[v]:>20}" for v in VARIANTS), flush=True)
        base = median(times[VARIANTS[0]])
        print("\nmedian push-to-live, and the ratio to dockerfile@docker:")
        for variant in VARIANTS:
            m = median(times[variant])
            print(f"  {variant:<20} {m:6.2f} s   ratio {m / base:5.2f}")


if __name__ == "__main__":
    sys.exit(main())
