"""Shared plumbing for the benchmarks in bench/: not a benchmark itself.

Gives each benchmark a throwaway workspace with its own `rivetr-git serve` (own data dir,
own SSH key, ports picked by the OS, listening on 127.0.0.1 only), a tiny busybox app repo,
and a cleanup that removes everything the run created: the daemon (by PID), its containers
(by its `rivetr.instance` label) and images (named `rivetr-<instance>/...`), containers and
images the benchmark itself started (by the `rivetr-bench.run` label) and the temp dir.
A benchmark that deploys more than keep_releases times also wraps its workspace in
`build_leftovers()`: the untagged build images the server's prune leaves behind carry no
name or label, so they are tracked from each release's history and removed at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from rivetr_git.pipeline.labels import instance_id

ROOT = Path(__file__).resolve().parent.parent
RIVETR = ROOT / ".venv" / "bin" / "rivetr-git"
BUSYBOX = Path("/bin/busybox")
BENCH_LABEL = "rivetr-bench.run"
INSTANCE_LABEL = "rivetr.instance"
APP_LABEL = "rivetr.app"
DEPLOYMENT_LABEL = "rivetr.deployment"
_DEPLOYMENT_NO = re.compile(r"\(deployment #(\d+)\)")
APP_PORT = 5000

DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
COPY www /www
EXPOSE {APP_PORT}
CMD ["/bin/busybox", "httpd", "-f", "-p", "{APP_PORT}", "-h", "/www"]
"""

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


class DeployFailed(BenchError):
    """One deploy did not go live; a benchmark may note it and try again."""


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> str:
    """Run a command to completion and return its stdout; raise BenchError on failure."""
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:g}s: {' '.join(map(str, cmd))}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"exit {proc.returncode}: {' '.join(map(str, cmd))}\n{err}")
    return proc.stdout.decode(errors="replace")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on {port}")


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10
) -> int:
    """Stop a process we started, by PID: `sig` (SIGTERM, or nginx's graceful SIGQUIT),
    SIGKILL if it has not exited within `timeout`; its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def git_env() -> dict[str, str]:
    """The caller's environment with a fixed commit identity and no user/system git config."""
    return {**os.environ, **_GIT_IDENTITY}


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks (the cleanup) still run."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


# --- HTTP --------------------------------------------------------------------------------------


def http_get(port: int, host: str, timeout: float = 2.0) -> tuple[int, str] | None:
    """GET / on 127.0.0.1:port with a Host header: (status, body), or None if no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for_content(
    port: int, host: str, expected: str, deadline: float, interval: float = 0.01
) -> float | None:
    """Poll until a 200 whose body contains `expected`; its monotonic time, or None at deadline."""
    while time.monotonic() < deadline:
        answer = http_get(port, host)
        if answer is not None and answer[0] == 200 and expected in answer[1]:
            return time.monotonic()
        time.sleep(interval)
    return None


# --- the app -----------------------------------------------------------------------------------


class AppRepo:
    """A git work tree holding the busybox app; each `commit` changes www/index.html."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = git_env()

    @classmethod
    def create(
        cls,
        path: Path,
        content: str,
        dockerfile: str = DOCKERFILE,
        files: Mapping[str, str] | None = None,
        executable: Collection[str] = (),
    ) -> AppRepo:
        """A new repo whose first commit holds busybox, `dockerfile`, www/index.html with
        `content`, and `files` (relative path -> text; those in `executable` get mode 755)."""
        path.mkdir(parents=True)
        shutil.copy2(BUSYBOX, path / "busybox")
        (path / "Dockerfile").write_text(dockerfile)
        (path / "www").mkdir()
        repo = cls(path)
        for name, text in (files or {}).items():
            repo.write(name, text, executable=name in executable)
        repo.git("init", "-q", "-b", "main")
        repo.commit(content)
        return repo

    def write(self, name: str, data: str | bytes, executable: bool = False) -> None:
        """Write a file of the work tree (not committed: `commit` adds everything)."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
        target.chmod(0o755 if executable else 0o644)

    def git(self, *args: str, timeout: float = 60) -> str:
        return run(["git", *args], cwd=self.path, env=self.env, timeout=timeout)

    def commit(self, content: str) -> None:
        (self.path / "www" / "index.html").write_text(f"<p>{content}</p>\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", content)

    def archive(self) -> bytes:
        """The committed tree (HEAD) as a tar: exactly what a push delivers, without .git."""
        proc = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD"],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return proc.stdout


# --- the server --------------------------------------------------------------------------------


@dataclass
class PushResult:
    """One `git push` watched as it ran. Times are seconds since the push started."""

    returncode: int
    output: list[str]
    first_remote_line: float | None
    exited: float


@dataclass
class Server:
    """A `rivetr-git serve` of our own, started on a fresh data dir."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    ssh_port: int = 0
    proxy_port: int = 0
    log_path: Path = field(init=False)
    data_dir: Path = field(init=False)
    key: Path = field(init=False)
    instance: str = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = (self.workdir / "data").resolve()
        self.key = self.workdir / "id_ed25519"
        self.log_path = self.workdir / "serve.log"
        self.instance = instance_id(self.data_dir)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30, settings: Mapping[str, str] | None = None) -> None:
        """Register an admin key, start the daemon, wait for its daemon.json.

        `settings` are extra RIVETR_* environment variables for the daemon (the caller's own
        RIVETR_* variables are never passed on), e.g. {"RIVETR_WATCH_WINDOW": "1"}.
        """
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key])
        run(
            [
                RIVETR,
                "--data-dir",
                self.data_dir,
                "keys",
                "add",
                "bench",
                self.key.with_suffix(".pub"),
                "--admin",
            ]
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIVETR_")}
        env.update(
            RIVETR_SSH_PORT="0",
            RIVETR_PROXY_PORT="0",
            RIVETR_SSH_HOST="127.0.0.1",
            RIVETR_PROXY_HOST="127.0.0.1",
            # HTTPS off (https_port 0): a fixed default port would clash between runs.
            RIVETR_HTTPS_PORT="0",
            RIVETR_API_PORT="0",  # the same for the HTTP API's 8081
        )
        env.update(settings or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(RIVETR), "--data-dir", str(self.data_dir), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        state_file = self.data_dir / "daemon.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"rivetr-git serve exited with {self.proc.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if state_file.exists():
                state = json.loads(state_file.read_text())
                if state["pid"] != self.proc.pid:
                    raise BenchError(
                        f"daemon.json names pid {state['pid']}, expected {self.proc.pid}"
                    )
                self.ssh_port, self.proxy_port = state["ssh_port"], state["proxy_port"]
                return
            time.sleep(0.05)
        raise BenchError(f"rivetr-git serve not ready within {timeout:g}s")

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM our daemon (by PID), SIGKILL if it does not exit in time; its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  ! daemon {self.proc.pid} ignored SIGTERM for {timeout:g}s; killing it")
            self.proc.kill()
            return self.proc.wait(10)

    def remote(self, app: str) -> str:
        return f"ssh://git@127.0.0.1:{self.ssh_port}/{app}"

    def push_env(self) -> dict[str, str]:
        ssh = (
            f"ssh -i {self.key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o IdentitiesOnly=yes -o LogLevel=ERROR -o BatchMode=yes"
        )
        return {**git_env(), "GIT_SSH_COMMAND": ssh}

    def push(self, repo: AppRepo, app: str, timeout: float = 180) -> PushResult:
        """`git push` HEAD to APP's main, blocking until git exits."""
        return watch_push(self.start_push(repo, app), time.monotonic(), timeout)

    def start_push(self, repo: AppRepo, app: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["git", "push", self.remote(app), "HEAD:refs/heads/main"],
            cwd=repo.path,
            env=self.push_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def rss_kb(self) -> int:
        return proc_status(self.pid)["VmRSS"]

    def problems(self) -> list[str]:
        """Lines of the daemon's log at WARNING or above, and tracebacks."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        keys = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback", "Exception")
        return [line for line in text.splitlines() if any(k in line for k in keys)]

    def containers(self) -> list[str]:
        """`docker ps -a` lines (name, state) of this instance's containers."""
        out = run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label={INSTANCE_LABEL}={self.instance}",
                "--format",
                "{{.Names}} {{.State}}",
            ]
        )
        return out.split("\n")[:-1] if out else []

    def images(self) -> list[str]:
        out = run(
            [
                "docker",
                "images",
                "--filter",
                f"reference=rivetr-{self.instance}/*",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]
        )
        return out.split()

    def app_containers(self, app: str) -> list[tuple[str, str, str]]:
        """(full id, name, state) of this instance's containers of APP, any state."""
        out = run(
            [
                "docker",
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                f"label={INSTANCE_LABEL}={self.instance}",
                "--filter",
                f"label={APP_LABEL}={app}",
                "--format",
                "{{.ID}} {{.Names}} {{.State}}",
            ]
        )
        return [(c[0], c[1], c[2]) for line in out.splitlines() if len(c := line.split()) == 3]

    def app_images(self, app: str) -> list[str]:
        """The tags rivetr-<instance>/APP:<deployment> that exist now."""
        out = run(
            [
                "docker",
                "images",
                "--filter",
                f"reference=rivetr-{self.instance}/{app}",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]
        )
        return out.split()


def published_port(container: str, port: int = APP_PORT) -> int:
    """The 127.0.0.1 host port Docker publishes the container's `port` on."""
    out = run(["docker", "port", container, f"{port}/tcp"])
    for line in out.splitlines():
        host, _, number = line.rpartition(":")
        if host in ("127.0.0.1", "0.0.0.0") and number.isdigit():
            return int(number)
    raise BenchError(f"container {container[:12]} publishes no {port}/tcp on 127.0.0.1: {out!r}")


def deployment_id(output: list[str]) -> int | None:
    """The deployment number in a push's `Deploying APP sha "msg" (deployment #N)` line."""
    for line in output:
        match = _DEPLOYMENT_NO.search(line)
        if match:
            return int(match.group(1))
    return None


def failure_reason(output: list[str]) -> str:
    """The line of a push's output that says why the deploy failed (else its last line)."""
    marked = [ln for ln in output if "Deploy failed" in ln]
    return (marked or output or ["(no output)"])[-1].removeprefix("remote:").strip()


def watch_push(proc: subprocess.Popen[bytes], started: float, timeout: float) -> PushResult:
    """Read a push's stderr as it streams; note when the first `remote:` line arrived."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    buf = b""
    first: float | None = None
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            proc.kill()
            proc.wait()
            raise BenchError(f"git push did not finish within {timeout:g}s")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        if first is None and b"remote:" in buf:
            first = time.monotonic() - started
    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    exited = time.monotonic() - started
    proc.stderr.close()
    lines = buf.decode(errors="replace").replace("\r", "\n").splitlines()
    # git pads remote lines with spaces (to overwrite progress output); drop them.
    return PushResult(code, [ln.rstrip() for ln in lines if ln.strip()], first, exited)


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/PID/status: VmRSS, VmHWM (in kB), Threads, ..."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit() and parts[1:] in ([], ["kB"]):
            out[key] = int(parts[0])
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- build leftovers ---------------------------------------------------------------------------


def _all_image_ids() -> set[str]:
    return set(run(["docker", "images", "-a", "-q", "--no-trunc"]).split())


@dataclass
class ImageRecord:
    """One image of a release's ancestry: the bytes of the layer its step added, its depth."""

    layer_bytes: int
    depth: int  # 1 for the base layer's image; children are deeper


class BuildLeftovers:
    """The images the builds of one run created, so those they leave behind can be counted
    and removed.

    rivetr removes an old release's tag without pruning its parents (on purpose: a concurrent
    build may just have taken one of them from the layer cache), so each pruned release
    leaves its build's intermediate images (COPY www and the metadata steps above it) as
    untagged, mostly dangling, images. Docker cannot say which build made a dangling image,
    so `record` notes a release image's ancestry (`docker history`, classic builder: every
    step is a local image) while it still has its tag; images that existed before this run
    (shared cache entries such as the busybox layer) are never counted or removed.
    """

    def __init__(self) -> None:
        self.before = _all_image_ids()
        self.images: dict[str, ImageRecord] = {}
        self.not_removed: list[str] = []  # why `remove` left some (e.g. a child elsewhere)

    def record(self, image: str) -> None:
        """Note the ancestry of `image` (a tag or id); quietly skips one that is gone."""
        rows = history(image)
        for depth, (image_id, size) in enumerate(reversed(rows), start=1):
            if image_id.startswith("sha256:") and image_id not in self.before:
                self.images.setdefault(image_id, ImageRecord(size, depth))

    def existing(self) -> dict[str, int]:
        """Recorded images that still exist: id -> number of tags."""
        if not self.images:
            return {}
        proc = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}} {{len .RepoTags}}", *self.images],
            capture_output=True,
            timeout=120,
            check=False,
        )  # exits 1 when some are gone: the others are still printed
        out = {}
        for line in proc.stdout.decode().splitlines():
            image_id, _, tags = line.partition(" ")
            if tags.strip().isdigit():  # blank lines stand for images already gone
                out[image_id] = int(tags)
        return out

    def leftovers(self, live_tags: Sequence[str]) -> dict[str, ImageRecord]:
        """Recorded images that still exist but are in the ancestry of none of `live_tags`."""
        live: set[str] = set()
        for tag in live_tags:
            live.update(image_id for image_id, _ in history(tag))
        return {i: self.images[i] for i in self.existing() if i not in live}

    def remove(self) -> tuple[int, int]:
        """`docker rmi --no-prune` every recorded image that is left, children first.
        Returns (removed, failed)."""
        left = sorted(self.existing(), key=lambda i: -self.images[i].depth)
        removed = 0
        self.not_removed = []
        for image_id in left:
            proc = subprocess.run(
                ["docker", "rmi", "--no-prune", image_id],
                capture_output=True,
                timeout=120,
                check=False,
            )
            if proc.returncode == 0:
                removed += 1
            else:
                self.not_removed.append(
                    f"{image_id[7:19]}: {proc.stderr.decode(errors='replace').strip()}"
                )
        return removed, len(self.not_removed)


def history(image: str) -> list[tuple[str, int]]:
    """(image id, bytes its step added) for each step of `image`, newest first; [] if gone."""
    proc = subprocess.run(
        [
            "docker",
            "history",
            "--no-trunc",
            "--human=false",
            "--format",
            "{{.ID}} {{.Size}}",
            image,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    rows = []
    for line in proc.stdout.decode().splitlines():
        image_id, _, size = line.partition(" ")
        rows.append((image_id, int(size) if size.isdigit() else 0))
    return rows


@contextlib.contextmanager
def build_leftovers() -> Iterator[BuildLeftovers]:
    """A BuildLeftovers whose images are removed on exit (use it outside `workspace`, so
    the daemon and the tagged images are gone first)."""
    tracker = BuildLeftovers()
    try:
        yield tracker
    finally:
        removed, failed = tracker.remove()
        print(f"  removed {removed} untagged build image(s) this run left behind")
        if failed:
            # Typically a cache step (e.g. the busybox layer) another build on this engine
            # has reused since: it has children now, and is not ours alone to delete.
            print(f"  kept {failed} this run created that other images now build on:")
            for line in tracker.not_removed[:3]:
                print(f"    {line}")


# --- cleanup -----------------------------------------------------------------------------------


def remove_labelled(label: str, reference: str | None = None) -> tuple[int, int, int]:
    """`docker rm -f` every container carrying `label`, `docker rmi` every image carrying
    it (or, when given, every image matching `reference`: rivetr's images are named, not
    labelled), and `docker network rm` every network carrying it (each app's own network,
    a /26 of the app_networks range that would otherwise stay taken)."""
    containers = run(["docker", "ps", "-aq", "--filter", f"label={label}"]).split()
    if containers:
        run(["docker", "rm", "-f", *containers], timeout=300)
    image_filter = f"reference={reference}" if reference else f"label={label}"
    images = sorted(set(run(["docker", "images", "-q", "--filter", image_filter]).split()))
    if images:
        # -f: one image id may carry several of our tags (identical builds share an id).
        run(["docker", "rmi", "-f", *images], timeout=300)
    if reference:  # the untagged build stages of generated recipes carry the label
        stages = set(run(["docker", "images", "-q", "--filter", f"label={label}"]).split())
        if stages:
            run(["docker", "rmi", "-f", *sorted(stages)], timeout=300)
            images = sorted({*images, *stages})
    networks = run(["docker", "network", "ls", "-q", "--filter", f"label={label}"]).split()
    if networks:
        run(["docker", "network", "rm", *networks], timeout=300)
    return len(containers), len(images), len(networks)


def dangling_images() -> set[str]:
    return set(run(["docker", "images", "-q", "--no-trunc", "--filter", "dangling=true"]).split())


def remove_new_dangling(before: set[str]) -> int:
    """Remove the untagged images that appeared since `before` (e.g. the first stage of a
    hand-built multi-stage Dockerfile, which nothing labels); for runs on a quiet engine,
    since another build's stage made meanwhile would go too."""
    new = sorted(dangling_images() - before)
    if new:
        run(["docker", "rmi", "-f", *new], timeout=300)
    return len(new)


@contextlib.contextmanager
def workspace(prefix: str, save_log: Path | None = None) -> Iterator[Server]:
    """A temp dir and a (not yet started) Server in it; everything is removed on exit.
    With `save_log`, the daemon's log is copied there first (once the daemon stopped)."""
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = Server(workdir)
    try:
        yield server
    finally:
        print("\ncleaning up ...", flush=True)
        code = server.stop()
        if code not in (None, 0):
            print(f"  ! rivetr-git serve exited with code {code}")
        if save_log is not None and server.log_path.exists():
            try:
                shutil.copyfile(server.log_path, save_log)
                print(f"  saved the daemon's log to {save_log}")
            except OSError as exc:
                print(f"  ! could not save the daemon's log: {exc}", file=sys.stderr)
        for label, reference in (
            (f"{INSTANCE_LABEL}={server.instance}", f"rivetr-{server.instance}/*"),
            (f"{BENCH_LABEL}={server.instance}", None),
        ):
            try:
                n_containers, n_images, n_networks = remove_labelled(label, reference)
                print(
                    f"  removed {n_containers} container(s), {n_images} image(s), "
                    f"{n_networks} network(s) labelled {label}"
                )
            except BenchError as exc:
                print(f"  ! cleanup of {label} failed: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"  removed {workdir}")


def report_server_health(server: Server, expected_containers: int) -> None:
    """Print the daemon's warnings/errors and whether containers were left behind."""
    problems = server.problems()
    print(f"server log ({server.log_path.name}): {len(problems)} warning/error line(s)")
    for line in problems[:10]:
        print(f"  {line}")
    containers = server.containers()
    not_running = [c for c in containers if not c.endswith(" running")]
    print(
        f"containers of this instance: {len(containers)} (expected {expected_containers} "
        f"running), not running: {len(not_running)}"
    )
    for line in not_running[:5]:
        print(f"  {line}")
    print(f"images of this instance: {len(server.images())}")


def bench_main(
    name: str, main: Callable[[], int], errors: tuple[type[BaseException], ...] = ()
) -> NoReturn:
    """Run a benchmark's main(): its exit code, or 1 with the message on a BenchError
    (or one of `errors`), 130 on Ctrl-C (workspaces have cleaned up by then)."""
    caught: tuple[type[BaseException], ...] = (BenchError, *errors)
    try:
        sys.exit(main())
    except caught as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted (cleanup done)", file=sys.stderr)
        sys.exit(130)
