"""Admin verbs over the real SSH server with real keys, against real containers and proxy."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import threading
import time
from pathlib import Path

from tests.helpers import (
    SHELL_DOCKERFILE_HEAD,
    AppRepo,
    Key,
    Server,
    docker_ids,
    make_key,
    run,
    ssh_command,
    wait_until,
)

# A shell app whose env is readable over HTTP and whose requests show in its log (-v).
SHELL_APP = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
RUN chmod +x /www/cgi-bin/env
EXPOSE 5000
CMD ["sh", "-c", "echo started-marker; exec httpd -f -v -p 5000 -h /www"]
"""
)
ENV_CGI = """#!/bin/sh
echo 'Content-Type: text/plain'
echo
printf '%s' "$GREETING" | od -An -v -tx1 | tr -d ' \\n'
"""


def verb(
    server: Server, key: Key, *argv: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [
        *ssh_command(key.private).split(),
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
        shlex.join(argv),
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin if stdin is not None else "",
    )


def ok(server: Server, key: Key, *argv: str, stdin: str | None = None) -> str:
    result = verb(server, key, *argv, stdin=stdin)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


def fails(server: Server, key: Key, *argv: str, stdin: str | None = None) -> str:
    """Run a verb that must fail; its stderr."""
    result = verb(server, key, *argv, stdin=stdin)
    assert result.returncode != 0, f"{argv} succeeded: {result.stdout}"
    return result.stderr


def shell_app(path: Path, key: Key) -> AppRepo:
    repo = AppRepo(path, key, SHELL_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/env", ENV_CGI)
    repo.commit("shell app")
    return repo


def greeting(server: Server, app: str) -> str:
    status, body = server.get(app, "/cgi-bin/env")
    assert status == 200, body
    return bytes.fromhex(body.strip()).decode()


def inspect(container_id: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(run(["docker", "inspect", container_id]).stdout)
    return data[0]


def live_container(server: Server, app: str) -> str:
    for line in server.cli("deploys", "list", app).stdout.splitlines()[1:]:
        fields = line.split()
        if fields[1] == "running":
            container = run(
                [
                    "docker",
                    "ps",
                    "-q",
                    "--filter",
                    f"label=rivetr.deployment={fields[0][1:]}",
                    "--filter",
                    f"label=rivetr.instance={server.instance}",
                ]
            ).stdout.split()
            assert container, line
            return container[0]
    raise AssertionError(f"nothing running for {app}")


# --- parsing and help --------------------------------------------------------------------------


def test_help_lists_every_verb_and_bad_input_answers_with_usage(
    server: Server, keys: dict[str, Key]
) -> None:
    alice = keys["alice"]
    text = ok(server, alice, "help")
    for name in (
        "apps:create",
        "config:set",
        "limits:set",
        "checks:set",
        "deploy:set",
        "domains:add",
        "ps:restart",
        "logs",
        "run",
        "keys:add",
        "access:revoke",
    ):
        assert name in text
    assert "usage: config:set" in ok(server, alice, "config:set", "--help")
    for argv, advice in [
        (("apps:frobnicate",), "unknown command 'apps:frobnicate'"),
        (("config:set", "x"), "the following arguments are required: KEY=VALUE"),
        (("logs", "x", "-n"), "expected one argument"),
        (("apps:info", "Bad_Name"), "invalid app name"),
        (("ps:stop",), "usage: ps:stop"),
    ]:
        result = verb(server, alice, *argv)
        assert result.returncode != 0, argv
        assert advice in result.stderr, (argv, result.stderr)


# --- apps and access ---------------------------------------------------------------------------


def test_apps_lifecycle_and_destroy_leaves_nothing(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    assert "created gone-soon" in ok(server, alice, "apps:create", "gone-soon")
    assert "already exists" in fails(server, alice, "apps:create", "gone-soon")
    repo = AppRepo(workdir / "app", alice)
    assert repo.push(server.remote("gone-soon")).returncode == 0
    assert "gone-soon" in ok(server, alice, "apps:list")
    info = ok(server, alice, "apps:info", "gone-soon")
    assert "state:          running" in info and "path:         '' ['']" in info

    assert "--confirm gone-soon" in fails(server, alice, "apps:destroy", "gone-soon")
    assert server.get("gone-soon")[0] == 200
    assert "destroyed gone-soon" in ok(
        server, alice, "apps:destroy", "gone-soon", "--confirm", "gone-soon"
    )
    assert server.get("gone-soon")[0] == 404
    assert docker_ids("ps", server.instance, "label=rivetr.app=gone-soon") == []
    images = run(["docker", "images", "-q", f"rivetr-{server.instance}/gone-soon"]).stdout
    assert images.strip() == ""
    assert not (server.data_dir / "repos" / "gone-soon.git").exists()
    assert "does not exist" in fails(server, alice, "apps:info", "gone-soon")


def test_developer_sees_only_granted_apps_and_revocation_bites_on_an_open_connection(
    server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    ok(server, alice, "apps:create", "secret-app")
    ok(server, alice, "config:set", "secret-app", "TOKEN=hush", "--no-restart")
    for argv in (
        ("apps:info", "secret-app"),
        ("config", "secret-app"),
        ("config:get", "secret-app", "TOKEN"),
        ("logs", "secret-app"),
        ("config:set", "secret-app", "A=1"),
    ):
        denied, missing = (
            verb(server, bob, *argv),
            verb(server, bob, argv[0], "no-such-app", *argv[2:]),
        )
        assert denied.returncode == missing.returncode != 0
        assert denied.stderr.replace("secret-app", "X") == missing.stderr.replace(
            "no-such-app", "X"
        ), (denied.stderr, missing.stderr)
    assert "secret-app" not in ok(server, bob, "apps:list")
    for admin_only in (("keys:list",), ("apps:create", "bobs"), ("access:grant", "bob", "x")):
        assert "admin keys only" in fails(server, bob, *admin_only)

    ok(server, alice, "access:grant", "bob", "secret-app")
    assert "secret-app" in ok(server, bob, "apps:list")
    assert ok(server, bob, "config:get", "secret-app", "TOKEN") == "hush\n"

    # One SSH connection, several commands: the revoke takes effect on the next one.
    control = tmp_path / "cm.sock"
    base = [
        *ssh_command(bob.private).split(),
        "-o",
        f"ControlPath={control}",
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
    ]
    master = subprocess.Popen(
        [*base[:1], "-o", "ControlMaster=yes", "-N", *base[1:]], stdin=subprocess.DEVNULL
    )
    try:
        assert wait_until(control.exists, 10)
        shared = [*base[:1], "-o", "ControlMaster=no", *base[1:]]
        first = subprocess.run(
            [*shared, "config secret-app"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert first.returncode == 0 and "TOKEN" in first.stdout, first.stderr
        ok(server, alice, "access:revoke", "bob", "secret-app")
        second = subprocess.run(
            [*shared, "config secret-app"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert second.returncode != 0 and "does not exist" in second.stderr
        assert master.poll() is None  # it really was the same, still open connection
    finally:
        master.terminate()
        master.wait(10)


def test_keys_add_reads_the_key_from_stdin_and_remove_takes_effect(
    server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    carol = make_key(tmp_path / "k", "carol")
    alice = keys["alice"]
    fails(server, alice, "keys:add", "carol", stdin="not a key\n")
    assert "added key 'carol' (developer)" in ok(
        server, alice, "keys:add", "carol", stdin=carol.public.read_text()
    )
    assert "carol" in ok(server, alice, "keys:list")
    assert "no apps yet" in ok(server, carol, "apps:list")
    ok(server, alice, "keys:remove", "carol")
    fails(server, carol, "apps:list")


# --- env ---------------------------------------------------------------------------------------


def test_config_set_restarts_with_exact_values_and_unset_removes_them(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("configured")).returncode == 0
    assert greeting(server, "configured") == ""
    value = 'héllo "world" it\'s a=b\nsecond line  '
    out = ok(server, alice, "config:set", "configured", f"GREETING={value}", "OTHER=1")
    assert "-----> Restarting configured" in out and "-----> Running:" in out
    assert greeting(server, "configured") == value
    assert ok(server, alice, "config:get", "configured", "GREETING") == value + "\n"
    assert ok(server, alice, "config", "configured").split() == ["GREETING", "OTHER"]
    assert value not in ok(server, alice, "config", "configured")
    assert shlex.split(ok(server, alice, "config", "configured", "--reveal")) == [
        f"GREETING={value}",
        "OTHER=1",
    ]

    before = server.statuses("configured")
    ok(server, alice, "config:set", "configured", "GREETING=later", "--no-restart")
    assert server.statuses("configured") == before  # nothing redeployed
    assert greeting(server, "configured") == value
    ok(server, alice, "config:unset", "configured", "GREETING")
    assert greeting(server, "configured") == ""
    for argv, advice in [
        (("config:set", "configured", "PORT=1"), "set by the platform"),
        (("config:set", "configured", "1BAD=x"), "not a valid env var name"),
        (("config:set", "configured", "novalue"), "is not NAME=VALUE"),
        (("config:unset", "configured", "NOPE"), "NOPE"),
        (("config:set", "configured", "A=1", "--pass=hunter2"), "not shown"),
    ]:
        assert advice in fails(server, alice, *argv)


# --- limits, checks, deploy commands -----------------------------------------------------------


def test_limits_are_applied_to_containers_and_bad_limits_are_refused(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice)
    assert repo.push(server.remote("limited")).returncode == 0
    for bad, advice in [
        ("memory=lots", "512m"),
        ("memory=1k", "minimum"),
        ("cpu=-1", "e.g. 0.5"),
        ("cpu=64", "CPUs"),
        ("disk=1g", "one of"),
    ]:
        assert advice in fails(server, alice, "limits:set", "limited", bad)
    out = ok(server, alice, "limits:set", "limited", "memory=0.0625G", "cpu=0.5")
    assert "limits: memory 64 MiB, cpu 0.5" in out
    host = inspect(live_container(server, "limited"))["HostConfig"]
    assert isinstance(host, dict)
    assert host["Memory"] == 64 * 1024**2 and host["NanoCpus"] == 500_000_000
    assert "memory 64m, cpu 0.5" in ok(server, alice, "apps:info", "limited")
    assert server.get("limited")[0] == 200


def test_health_path_from_rivetr_toml_and_admin_checks_win(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice)
    repo.write("rivetr.toml", '[healthcheck]\npath = "/missing"\nretries = 2\ninterval = 0.1\n')
    repo.commit("strict health check")
    failed = repo.push(server.remote("toml-checked"))
    assert failed.returncode != 0
    assert "using rivetr.toml" in failed.stderr and "GET /missing" in failed.stderr

    ok(server, alice, "checks:set", "toml-checked", "path=/index.html", "timeout=3")
    pushed = repo.push(server.remote("toml-checked"))
    assert pushed.returncode == 0, pushed.stderr
    assert "GET /index.html ok" in pushed.stderr
    info = ok(server, alice, "apps:info", "toml-checked")
    assert "path:         /index.html ['']" in info and "timeout:      3s [" in info
    assert "retries:      2 [" in info  # from rivetr.toml
    assert "retries=10" in fails(server, alice, "checks:set", "toml-checked", "retries=0")

    repo.write("rivetr.toml", "[healthcheck]\nwhat = 1\n")
    repo.commit("bad file")
    broken = repo.push(server.remote("toml-checked"))
    assert broken.returncode != 0 and "unknown [healthcheck] key(s) what" in broken.stderr


def test_pre_deploy_failure_keeps_the_old_release_and_post_failure_keeps_the_new(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("deploy-hooked")).returncode == 0
    ok(server, alice, "deploy:set", "deploy-hooked", "pre=echo migrating; echo boom >&2; exit 3")
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    pushed = repo.push(server.remote("deploy-hooked"))
    assert pushed.returncode != 0
    assert "Running pre-deploy command" in pushed.stderr and "migrating" in pushed.stderr
    assert "Deploy failed at pre_deploy: pre-deploy command exited with code 3" in pushed.stderr
    assert server.get("deploy-hooked") == (200, "hello v1\n")
    assert len(docker_ids("ps", server.instance, "label=rivetr.app=deploy-hooked")) == 1

    ok(server, alice, "deploy:set", "deploy-hooked", "pre=", "post=echo post-ran; exit 4")
    pushed = repo.push(server.remote("deploy-hooked"))
    assert pushed.returncode == 0, pushed.stderr
    assert "post-ran" in pushed.stderr
    assert "\x1b[31m" in pushed.stderr and "post-deploy command exited with code 4" in pushed.stderr
    assert server.get("deploy-hooked") == (200, "v2\n")
    deploys = ok(server, alice, "deploys", "deploy-hooked")
    assert "post-deploy command exited with code 4" in deploys.splitlines()[1]


# --- domains and processes ---------------------------------------------------------------------


def get_host(server: Server, host: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{server.proxy_port}/", headers={"Host": host}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_domains_route_and_belong_to_one_app(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice)
    assert repo.push(server.remote("domained")).returncode == 0
    ok(server, alice, "apps:create", "rival")
    assert get_host(server, "www.example.test") == 404
    ok(server, alice, "domains:add", "domained", "WWW.Example.test.", "api.example.test")
    assert get_host(server, "www.example.test") == 200
    assert get_host(server, "api.example.test:8080") == 200
    taken = fails(server, alice, "domains:add", "rival", "www.example.test")
    assert "already a domain of another app" in taken
    for bad in ("http://x.test/", "x", "a..test", "under.localhost"):
        fails(server, alice, "domains:add", "domained", bad)
    listed = ok(server, alice, "domains:list", "domained").split()
    assert "api.example.test" in listed and "www.example.test" in listed
    ok(server, alice, "domains:remove", "domained", "www.example.test")
    assert get_host(server, "www.example.test") == 404
    assert get_host(server, "api.example.test") == 200


def test_ps_stop_start_restart(server: Server, keys: dict[str, Key], workdir: Path) -> None:
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice)
    assert repo.push(server.remote("stoppable")).returncode == 0
    assert "stopped stoppable" in ok(server, alice, "ps:stop", "stoppable")
    status, body = server.get("stoppable")
    assert status == 503 and "stopped" in body
    assert "already stopped" in fails(server, alice, "ps:stop", "stoppable")
    assert "started stoppable" in ok(server, alice, "ps:start", "stoppable")
    assert server.get("stoppable") == (200, "hello v1\n")
    out = ok(server, alice, "ps:restart", "stoppable")
    assert "-----> Restarting stoppable" in out
    assert server.get("stoppable") == (200, "hello v1\n")
    assert "restart" in ok(server, alice, "deploys", "stoppable").splitlines()[1]


def test_logs_follow_streams_until_the_client_goes(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("chatty")).returncode == 0
    assert "started-marker" in ok(server, alice, "logs", "chatty", "-n", "50")
    command = [
        *ssh_command(alice.private).split(),
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
        "logs chatty -n 0 -f",
    ]
    follow = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen: list[bytes] = []
    out = follow.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: seen.extend(iter(out.readline, b"")), daemon=True)
    reader.start()
    try:
        time.sleep(1)
        assert not any(b"started-marker" in line for line in seen)  # -n 0: no history
        server.get("chatty", "/index.html")  # httpd -v logs each request's response
        assert wait_until(lambda: any(b"response:200" in line for line in seen), 15), seen
        assert follow.poll() is None  # still following
    finally:
        follow.terminate()
        follow.wait(10)
    reader.join(10)


def test_run_streams_output_and_passes_the_exit_code_through(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("runner")).returncode == 0
    ok(server, alice, "config:set", "runner", "GREETING=from env", "--no-restart")
    ok(server, alice, "ps:restart", "runner")
    result = verb(server, alice, "run", "runner", "sh", "-c", 'echo "$GREETING"; exit 7')
    assert result.returncode == 7, result.stderr
    assert result.stdout == "from env\n"
    assert docker_ids("ps", server.instance, "label=rivetr.oneoff=1") == []
    assert "give a command" in fails(server, alice, "run", "runner")


# --- builds ------------------------------------------------------------------------------------


def test_build_env_reaches_the_build_but_not_the_image_and_rivetr_toml_sets_the_type(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice, secret = keys["alice"], "s3cret-build-value-91"
    ok(server, alice, "apps:create", "built-env")
    ok(server, alice, "config:set", "built-env", f"NPM_TOKEN={secret}", "--no-restart")
    bad = fails(server, alice, "builds:set", "built-env", "env=NPM_TOKEN,PORT")
    assert "env=NPM_TOKEN,API_URL" in bad
    ok(server, alice, "builds:set", "built-env", "env=NPM_TOKEN,NOT_SET")
    digest = hashlib.md5(secret.encode()).hexdigest()  # the build checks the value by it
    repo = AppRepo(
        workdir / "app",
        alice,
        SHELL_DOCKERFILE_HEAD
        + (
            "ARG NPM_TOKEN\n"
            f'RUN [ "$(printf %s "$NPM_TOKEN" | md5sum | cut -c1-32)" = "{digest}" ] '
            "&& echo build-token-ok\n"
            "COPY www /www\nEXPOSE 5000\n"
            'CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]\n'
        ),
    )
    pushed = repo.push(server.remote("built-env"))
    assert pushed.returncode == 0, pushed.stderr
    assert "build-token-ok" in pushed.stderr
    assert "build env NOT_SET not set" in pushed.stderr
    image = (
        f"rivetr-{server.instance}/built-env:"
        + server.cli("deploys", "list", "built-env").stdout.splitlines()[1].split()[0][1:]
    )
    history = run(["docker", "history", "--no-trunc", image]).stdout
    assert secret not in history and "NPM_TOKEN=<build-time value>" in history

    # rivetr.toml's [build] type is used, and an explicit type never falls back.
    repo.write("rivetr.toml", '[build]\ntype = "static"\n')
    repo.commit("static by rivetr.toml")
    static = repo.push(server.remote("built-env"))
    # No ./index.html at the root: the explicit type fails rather than fall back.
    assert static.returncode != 0
    assert "build_type is static (set by [build] type in rivetr.toml)" in static.stderr
    repo.write("rivetr.toml", '[build]\ntype = "cobol"\n')
    repo.commit("bad type")
    refused = repo.push(server.remote("built-env"))
    assert refused.returncode != 0 and "'cobol' is not a build type" in refused.stderr
