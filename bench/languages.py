"""The built-in builder's part of bench/build_types.py: push-to-live of a Python, a Node
and a Go app (first push with a changed manifest, then a code-only push) against the same
builds by hand with an equivalent hand-written Dockerfile. See build_types.py's docstring."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from harness import (
    BENCH_LABEL,
    AppRepo,
    BenchError,
    Server,
    dangling_images,
    http_get,
    median,
    remove_new_dangling,
    workspace,
)
from push_to_live import ByHand

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import lang_apps
from tests.base_images import base_images, image_env

HAND_WRITTEN = {
    "python": """\
FROM {python}
ENV PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH PORT=5000
RUN python3 -m venv /opt/venv
WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
USER 10001
CMD ["python", "app.py"]
""",
    "node": """\
FROM {node}
ENV PORT=5000
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run build
USER 10001
CMD ["npm", "start"]
""",
    "go": """\
FROM {go} AS build
WORKDIR /src
COPY go.mod ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/app .
FROM {slim}
COPY --from=build /out/app /usr/local/bin/app
ENV PORT=5000
USER 10001
CMD ["/usr/local/bin/app"]
""",
}
FILES = {"python": lang_apps.python_files, "node": lang_apps.node_files, "go": lang_apps.go_files}
# Where each app's manifest takes a change that makes its dependency layer rebuild.
MANIFEST = {"python": "requirements.txt", "node": "package.json", "go": "go.mod"}


def with_manifest_change(language: str, files: dict[str, str | bytes], nonce: str) -> None:
    name = MANIFEST[language]
    text = str(files[name])
    if language == "node":
        files[name] = text.replace('"private": true', f'"private": true, "description": "{nonce}"')
    else:
        files[name] = text + ("// " if language == "go" else "# ") + nonce + "\n"


def commit(repo: AppRepo, files: dict[str, str | bytes], message: str) -> None:
    for name, data in files.items():
        repo.write(name, data)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", message)


def new_repo(path: Path) -> AppRepo:
    path.mkdir(parents=True)
    repo = AppRepo(path)
    repo.git("init", "-q", "-b", "main")
    return repo


def rivetr_push(server: Server, repo: AppRepo, app: str, content: str) -> float:
    started = time.monotonic()
    result = server.push(repo, app, timeout=600)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise BenchError(f"{app}: push failed:\n" + "\n".join(result.output[-15:]))
    answer = http_get(server.proxy_port, f"{app}.localhost")
    if answer is None or content not in answer[1]:
        raise BenchError(f"{app}: push exited 0 but the proxy answered {answer!r}")
    return took


def by_hand_push(hand: ByHand, content: str) -> float:
    done = hand.deploy(content, timeout=600, interval=0.01)
    if done.to_live is None:
        raise BenchError(f"by hand: {content} never answered")
    return done.to_live


def one_language(server: Server, language: str, rounds: int, images: dict[str, str]) -> None:
    work = server.workdir / language
    hand_repo = new_repo(work / "by-hand")
    hand = ByHand(work, hand_repo, f"{BENCH_LABEL}={server.instance}")
    dockerfile = HAND_WRITTEN[language].format(**images)
    times: dict[str, list[float]] = {"first": [], "code": [], "hand first": [], "hand code": []}
    for n in range(-1, rounds):  # round -1 warms the base image's layers up; not counted
        nonce = uuid.uuid4().hex[:8]
        app = f"lb{language}{n + 1}-{nonce[:4]}"
        repo = new_repo(work / app)
        for step, greeting in (("first", f"first {nonce}"), ("code", f"code {nonce}")):
            files = FILES[language](greeting)
            with_manifest_change(language, files, nonce)
            hand_files = {**FILES[language](f"hand {greeting}"), "Dockerfile": dockerfile}
            with_manifest_change(language, hand_files, nonce)
            commit(repo, files, step)
            commit(hand_repo, hand_files, step)
            order = [True, False] if n % 2 else [False, True]
            for rivetr_side in order:
                if rivetr_side:
                    took = rivetr_push(server, repo, app, greeting)
                    key = step
                else:
                    took = by_hand_push(hand, f"hand {greeting}")
                    key = f"hand {step}"
                if n >= 0:
                    times[key].append(took)
        if n >= 0:
            print(
                f"  {language:<6} round {n + 1}: first {times['first'][-1]:6.2f} s "
                f"(by hand {times['hand first'][-1]:6.2f}), code-only {times['code'][-1]:6.2f} s "
                f"(by hand {times['hand code'][-1]:6.2f})",
                flush=True,
            )
    for step in ("first", "code"):
        mine, theirs = median(times[step]), median(times[f"hand {step}"])
        print(
            f"  {language:<6} {step + ' push':<12} rivetr {mine:6.2f} s  by hand {theirs:6.2f} s  "
            f"ratio {mine / theirs:5.2f}"
        )


def languages(rounds: int, which: Sequence[str]) -> None:
    print("\nbuilt-in builder: push-to-live per language against docker build by hand")
    images = base_images()
    before = dangling_images()
    try:
        with workspace("rivetr-bench-lang-") as server:
            server.start(settings={"RIVETR_WATCH_WINDOW": "1", **image_env(images)})
            for language in which:
                one_language(server, language, rounds, images)
    finally:
        print(f"  removed {remove_new_dangling(before)} untagged stage image(s) of hand builds")
