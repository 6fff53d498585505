"""Test helpers that drive the real thing: the `rivetr-git` daemon, git over SSH, Docker."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
ZERO = "0" * 40

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

HTTPD_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY www /www
EXPOSE 5000
CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]
"""

# With a shell, for RUN steps.
SHELL_DOCKERFILE_HEAD = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def run(
    cmd: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it is true or `timeout` seconds have passed; return the last
    result's truth. Callers assert on it (or on the state) afterwards."""
    deadline = time.monotonic() + timeout
    while not (ok := bool(condition())) and time.monotonic() < deadline:
        time.sleep(interval)
    return ok


def read_until(push: subprocess.Popen[bytes], marker: bytes) -> bytes:
    """Read a background push's output until `marker` shows; fail if the push ends first."""
    assert push.stderr is not None
    seen = b""
    while marker not in seen:
        chunk = os.read(push.stderr.fileno(), 4096)
        assert chunk, seen.decode()
        seen += chunk
    return seen


def instance_of(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def docker_ids(kind: str, instance: str, extra: str = "") -> list[str]:
    """Container ids carrying this instance's label ('ps'), or its image tags ('images')."""
    if kind == "images":
        out = run(
            [
                "docker",
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "--filter",
                f"reference=rivetr-{instance}/*",
            ]
        ).stdout
        # Podman's compatible API ignores the reference filter: filter here too.
        return [t for t in out.split() if t.startswith(f"rivetr-{instance}/")]
    filt = ["--filter", f"label=rivetr.instance={instance}"]
    if extra:
        filt += ["--filter", extra]
    return run(["docker", "ps", "-aq", *filt]).stdout.split()


@dataclass
class Key:
    name: str
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_suffix(".pub")


def make_key(directory: Path, name: str) -> Key:
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / f"{name}"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)])
    (directory / f"{name}.pub").rename(private.with_suffix(".pub"))
    return Key(name, private)


def ssh_command(*identities: Path, known_hosts: Path | None = None) -> str:
    hosts = (
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=accept-new"
        if known_hosts
        else "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"
    )
    ids = " ".join(f"-i {p}" for p in identities)
    return (
        f"ssh {ids} -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR "
        f"-o ConnectTimeout=10 {hosts}"
    )


class Server:
    """A real `rivetr-git serve` subprocess on free loopback ports."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.env = {
            "RIVETR_SSH_HOST": "127.0.0.1",
            "RIVETR_SSH_PORT": "0",
            "RIVETR_PROXY_HOST": "127.0.0.1",
            "RIVETR_PROXY_PORT": "0",
            "RIVETR_HTTPS_PORT": "0",  # HTTPS off unless a test gives it a free port
            "RIVETR_API_PORT": "0",
            "RIVETR_HEALTH_RETRIES": "25",
            "RIVETR_HEALTH_INTERVAL": "0.2",
            "RIVETR_STOP_TIMEOUT": "2",
            "RIVETR_WATCH_WINDOW": "1",
            "RIVETR_LOG_LEVEL": "DEBUG",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.ssh_port = 0
        self.proxy_port = 0
        self.https_port = 0
        self.api_port = 0
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-serve.log"
        self.instance = instance_of(self.data_dir)

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "rivetr_git.cli.main", "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
            env={**os.environ, **self.env},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"rivetr-git {args} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, timeout: float = 30) -> None:
        state = self.data_dir / "daemon.json"
        state.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rivetr_git.cli.main",
                "--data-dir",
                str(self.data_dir),
                "serve",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            if state.exists():
                info = json.loads(state.read_text())
                if info["pid"] == self.proc.pid:
                    self.ssh_port, self.proxy_port = info["ssh_port"], info["proxy_port"]
                    self.https_port = info.get("https_port", 0)
                    self.api_port = info.get("api_port", 0)
                    return
            time.sleep(0.05)
        self.stop(signal.SIGKILL)  # never leave a half-started daemon behind
        raise AssertionError(f"daemon did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def statuses(self, app: str) -> list[str]:
        """The app's deployment statuses, newest first, as `deploys list` shows them."""
        out = self.cli("deploys", "list", app).stdout.splitlines()[1:]
        return [line.split()[1] for line in out]

    def remote(self, app: str) -> str:
        return f"ssh://git@127.0.0.1:{self.ssh_port}/{app}"

    def get(self, app: str, path: str = "/", timeout: float = 5) -> tuple[int, str]:
        """GET through the proxy with Host: APP.localhost."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.proxy_port}{path}", headers={"Host": f"{app}.localhost"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def purge(self) -> None:
        """Remove every container and image this server instance made."""
        containers = docker_ids("ps", self.instance)
        if containers:
            run(["docker", "rm", "-f", *containers], check=False)
        images = run(
            [
                "docker",
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                f"rivetr-{self.instance}/*",
            ],
            check=False,
        ).stdout.split()
        if images:
            run(["docker", "rmi", "-f", *images], check=False)
        # Untagged images labelled with the instance: build stages of multi-stage builds.
        stages = run(
            ["docker", "images", "-q", "--filter", f"label=rivetr.instance={self.instance}"],
            check=False,
        ).stdout.split()
        if stages:
            run(["docker", "rmi", "-f", *sorted(set(stages))], check=False)
        # Compose groups' networks (rivetr-<instance>-<app>-<deployment>_default).
        networks = [
            n
            for n in run(
                ["docker", "network", "ls", "--format", "{{.Name}}"], check=False
            ).stdout.split()
            if n.startswith((f"rivetr-{self.instance}-", f"rivetr-{self.instance}.svc."))
        ]
        if networks:
            run(["docker", "network", "rm", *networks], check=False)
        # Volumes of apps (storage:mount, compose) that the test left behind.
        label = f"label=rivetr.instance={self.instance}"
        listed = run(["docker", "volume", "ls", "-q", "--filter", label], check=False)
        if volumes := listed.stdout.split():
            run(["docker", "volume", "rm", "-f", *volumes], check=False)


class AppRepo:
    """A local git checkout of a busybox app that can be pushed to a rivetr server."""

    def __init__(self, path: Path, key: Key, dockerfile: str = HTTPD_DOCKERFILE) -> None:
        self.path = path
        self.key = key
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        shutil.copy(BUSYBOX, path / "busybox")
        (path / "www").mkdir()
        self.write("Dockerfile", dockerfile)
        self.write("www/index.html", "hello v1\n")
        self.commit("first")

    def git(self, *args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
        return run(
            ["git", *args],
            cwd=self.path,
            check=check,
            env={"GIT_SSH_COMMAND": ssh_command(self.key.private)},
            **kw,  # type: ignore[arg-type]
        )

    def write(self, name: str, content: str) -> None:
        (self.path / name).write_text(content)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, remote: str, *refspecs: str) -> subprocess.CompletedProcess[str]:
        return self.git("push", remote, *(refspecs or ("main",)), check=False, timeout=180)

    def start_push(self, remote: str) -> subprocess.Popen[bytes]:
        """`git push REMOTE main` in the background, in a session of its own (so it can be
        killed whole, ssh included); read its output with read_until()."""
        return subprocess.Popen(
            ["git", "push", remote, "main"],
            cwd=self.path,
            env={**os.environ, **GIT_ENV, "GIT_SSH_COMMAND": ssh_command(self.key.private)},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def remote_sha(self, remote: str, ref: str = "refs/heads/main") -> str | None:
        out = self.git("ls-remote", remote, ref).stdout.split()
        return out[0] if out else None


NGINX_IMAGE = "rivetr-test/nginx:local"
_NGINX_CONF = """\
worker_processes 1;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    include /etc/nginx/conf.d/*.conf;
}
"""


def nginx_image(work: Path) -> str:
    """A local stand-in for the official nginx image (no registry here): Debian's nginx and
    its libraries FROM scratch, laid out like the official image (conf.d/*.conf included,
    /usr/share/nginx/html, CMD runs nginx in the foreground). Built once; returns its tag."""
    if run(["docker", "image", "inspect", NGINX_IMAGE], check=False).returncode == 0:
        return NGINX_IMAGE
    nginx = Path("/usr/sbin/nginx")
    assert nginx.exists(), "nginx is needed for the static build tests: run scripts/ensure-tools"
    root = work / "nginx-root"
    for directory in (
        "usr/sbin",
        "etc/nginx/conf.d",
        "var/log/nginx",
        "var/lib/nginx",
        "run",
        "var/lock",
        "usr/share/nginx/html",
        "tmp",
    ):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy(nginx, root / "usr/sbin/nginx")
    for lib in run(["ldd", str(nginx)]).stdout.split():
        if lib.startswith("/"):
            (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, root / lib.lstrip("/"))
    shutil.copy("/etc/nginx/mime.types", root / "etc/nginx/mime.types")
    (root / "etc/nginx/nginx.conf").write_text(_NGINX_CONF)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (work / "Dockerfile").write_text(
        "FROM scratch\nCOPY nginx-root/ /\nEXPOSE 80\n"
        'CMD ["/usr/sbin/nginx", "-g", "daemon off;"]\n'
    )
    run(["docker", "build", "-q", "-t", NGINX_IMAGE, str(work)])
    return NGINX_IMAGE


# A stand-in for the nixpacks, railpack and pack CLIs, which cannot be installed here. It
# records its arguments (and the values of `--env NAME` from its environment), prints
# lines, optionally waits for the test to have seen the first one (streaming), then builds
# the tree's busybox app with `docker build` under the image name it was given.
STAND_IN = """#!{python}
import json, os, pathlib, subprocess, sys, time
tool = pathlib.Path(sys.argv[0]).name
record = pathlib.Path({record!r})
args = sys.argv[1:]
def after(flag):
    return args[args.index(flag) + 1] if flag in args else None
envs = [args[i + 1] for i, a in enumerate(args) if a == "--env"]
seen = {{e: os.environ.get(e) for e in envs if "=" not in e}}
(record / f"{{tool}}.json").write_text(json.dumps({{"argv": args, "env": seen}}))
if tool == "nixpacks":
    name, source = after("--name"), args[1]
elif tool == "railpack":
    name, source = after("--name"), args[-1]
else:
    name, source = args[1], after("--path")
print(f"{{tool}} stand-in: planning {{source}}", flush=True)
for key, value in seen.items():  # a CLI that echoes a value: the log must mask it
    print(f"{{tool}} stand-in: {{key}}={{value}}", flush=True)
if (record / f"{{tool}}.wait").exists():
    deadline = time.time() + 60
    while not (record / f"{{tool}}.go").exists() and time.time() < deadline:
        time.sleep(0.05)
    print(f"{{tool}} stand-in: the test saw the first line", flush=True)
if (record / f"{{tool}}.fail").exists():
    print(f"{{tool}} stand-in: failing on purpose", flush=True)
    sys.exit(7)
dockerfile = ("FROM scratch\\nCOPY busybox /bin/busybox\\nCOPY www /www\\nEXPOSE 5000\\n"
              'CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\\n')
built = subprocess.run(["docker", "build", "-t", name, "-f", "-", source],
                       input=dockerfile.encode())
sys.exit(built.returncode)
"""


def stand_in_clis(directory: Path, record: Path) -> Path:
    """Write stand-in nixpacks, railpack and pack executables to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    record.mkdir(parents=True, exist_ok=True)
    for tool in ("nixpacks", "railpack", "pack"):
        path = directory / tool
        path.write_text(STAND_IN.format(python=sys.executable, record=str(record)))
        path.chmod(0o755)
    return directory
