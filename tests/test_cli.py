"""The one command line: older spellings and verbs give one output, `--help` everywhere.

Most of these run the real CLI against a real database while no server runs (what the
README promises works without it); the last ones compare with the real SSH verbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
import sys
from pathlib import Path

import pytest

from rivetr_git.admin.ssh_keys import parse_public_key
from rivetr_git.admin.verbs import VERBS
from rivetr_git.cli.main import main
from rivetr_git.cli.parse import ALIASES
from rivetr_git.models import LogLine, Role
from rivetr_git.store.database import Store
from tests.helpers import Key, Server, make_key
from tests.test_admin_verbs import ok, verb


async def _fill(data_dir: Path, keys: dict[str, Key]) -> int:
    """Keys, and one app in each state; the id of cl-run's live deployment."""
    data_dir.mkdir(parents=True)
    store = await Store.open(data_dir / "rivetr.db")
    try:
        for name, role in (("alice", Role.ADMIN), ("bob", Role.DEVELOPER)):
            key = parse_public_key(keys[name].public.read_text())
            await store.add_key(name, key.fingerprint, key.openssh, role)
        live = 0
        for name in ("cl-run", "cl-new", "cl-stop", "cl-crash"):
            app = await store.create_app(name)
            if name == "cl-new":
                continue
            d = await store.create_deployment(app, "a" * 40, f"first {name}", "alice")
            await store.append_logs(
                d.id,
                [
                    LogLine(0.0, "build", "out", f"built {name}"),
                    LogLine(0.1, "switch", "out", "-----> Running"),
                ],
            )
            await store.promote(d.id, app.id)
            live = live or d.id
        await store.update_app("cl-stop", stopped=True)
        await store.set_crashed((await store.get_app("cl-crash")).id, "keeps crashing")
        return live
    finally:
        await store.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]) -> tuple[Path, int]:
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    return data_dir, asyncio.run(_fill(data_dir, keys))


def cli(data_dir: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """The real `rivetr-git --data-dir DIR ARGS` in this process (a fresh interpreter per
    call would cost a second each): exit code, stdout, stderr."""
    out, err, saved = io.StringIO(), io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--data-dir", str(data_dir), *args])
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


def copy_of(template: tuple[Path, int], where: Path) -> Path:
    shutil.copytree(template[0], where)
    return where


# (older spelling, the verb); LIVE stands for cl-run's deployment, KEY for carol's .pub file.
PAIRS = [
    (["keys", "list"], ["keys:list"]),
    (["keys", "add", "carol", "KEY", "--admin"], ["keys:add", "carol", "--admin"]),
    (["keys", "add", "carol", "-"], ["keys:add", "carol"]),
    (["keys", "remove", "bob"], ["keys:remove", "bob"]),
    (["access", "grant", "bob", "cl-new"], ["access:grant", "bob", "cl-new"]),
    (["apps", "list"], ["apps:list"]),
    (["apps", "show", "cl-run"], ["apps:info", "cl-run"]),
    (["apps", "show", "cl-crash"], ["apps:info", "cl-crash"]),
    (["apps", "show", "nope"], ["apps:info", "nope"]),
    (
        ["apps", "set", "cl-run", "port=8000", "webhook_url="],
        ["apps:set", "cl-run", "port=8000", "webhook_url="],
    ),
    (["apps", "set", "cl-run", "port=99999"], ["apps:set", "cl-run", "port=99999"]),
    (["deploys", "list", "cl-run"], ["deploys", "cl-run"]),
    (["deploys", "list", "cl-run", "--limit", "1"], ["deploys", "cl-run", "-n", "1"]),
    (["deploys", "list", "cl-run", "--limit=1"], ["deploys", "cl-run", "--lines=1"]),
    (["logs", "LIVE"], ["deploys:log", "LIVE"]),
    (["logs", "999"], ["deploys:log", "999"]),
]


@pytest.mark.parametrize(("old", "verb"), PAIRS, ids=[" ".join(p[0]) for p in PAIRS])
def test_an_older_spelling_and_its_verb_answer_alike_without_the_server(
    template: tuple[Path, int],
    tmp_path: Path,
    keys: dict[str, Key],
    old: list[str],
    verb: list[str],
) -> None:
    carol = make_key(tmp_path / "k", "carol").public

    def concrete(argv: list[str]) -> list[str]:
        subs = {"LIVE": str(template[1]), "KEY": str(carol)}
        return [subs.get(a, a) for a in argv]

    stdin = carol.read_text()
    before = cli(copy_of(template, tmp_path / "old"), *concrete(old), stdin=stdin)
    after = cli(copy_of(template, tmp_path / "verb"), *concrete(verb), stdin=stdin)
    assert before == after
    assert before[1] or before[2]  # it said something


def test_apps_list_names_every_state_running_included(template: tuple[Path, int]) -> None:
    code, out, _ = cli(template[0], "apps:list")
    assert code == 0
    states = {line.split()[0]: line.split()[-2] for line in out.splitlines()[1:]}  # ..., URL
    assert states == {
        "cl-run": "running",
        "cl-new": "created",
        "cl-stop": "stopped",
        "cl-crash": "crashed",
    }
    assert out.splitlines()[0].split() == ["APP", "LIVE", "STATE", "URL"]


def test_a_deployments_log_is_its_pipeline_output(template: tuple[Path, int]) -> None:
    assert cli(template[0], "deploys:log", f"#{template[1]}") == (
        0,
        "built cl-run\n-----> Running\n",
        "",
    )


def test_verbs_that_need_the_server_say_so_and_change_nothing(
    template: tuple[Path, int], tmp_path: Path
) -> None:
    data_dir = copy_of(template, tmp_path / "d")
    code, out, err = cli(data_dir, "config:set", "cl-run", "K=V")
    assert code == 1 and out == ""
    assert "server is not running" in err and "rivetr-git serve" in err
    assert cli(data_dir, "keys:remove", "nobody")[0] == 1
    assert "bob" in cli(data_dir, "keys", "list")[1]


def test_only_the_first_key_creates_a_database(tmp_path: Path, keys: dict[str, Key]) -> None:
    code, _, err = cli(tmp_path / "typo", "apps", "list")
    assert code == 1 and "holds no rivetr-git data" in err
    assert not (tmp_path / "typo").exists()
    assert (
        cli(tmp_path / "d", "keys:add", "alice", "--admin", stdin=keys["alice"].public.read_text())[
            0
        ]
        == 0
    )
    assert "alice" in cli(tmp_path / "d", "keys:list")[1]


def test_a_bad_older_spelling_answers_with_its_usage(tmp_path: Path) -> None:
    code, _, err = cli(tmp_path / "d", "keys", "add", "carol")
    assert code == 2 and "keys add NAME PUBKEY_FILE [--admin]" in err
    code, _, err = cli(tmp_path / "d", "apps", "lst")
    assert code == 2 and "unknown action 'lst'" in err and "apps show APP" in err
    assert not (tmp_path / "d").exists()  # nothing was opened for a usage error


COMMANDS = (
    [[v.name] for v in VERBS]
    + [list(a.words) for a in ALIASES]
    + [["serve"], ["secrets", "rotate"], ["keys"], ["apps"], []]
)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) or "(none)" for c in COMMANDS])
def test_every_command_has_help(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("RIVETR_DATA_DIR", str(tmp_path / "d"))  # never client mode here
    argv = ["logs", "12"] if argv == ["logs", "-"] else argv
    try:
        code = main([*argv, "--help"])
    except SystemExit as exc:  # argparse's own --help (serve, secrets)
        code = int(exc.code or 0)
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("usage:"), out
    assert not (tmp_path / "d").exists()


def test_the_top_help_lists_the_older_spellings_and_the_new_verbs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for alias in ALIASES:
        assert f"rivetr-git {alias.spelling}" in out and f"= {alias.verb}\n" in out + "\n"
    assert "apps:set APP KEY=VALUE" in out and "deploys:log DEPLOYMENT" in out


# --- with the server running: the same output as the SSH verb ---------------------------------


SERVER_PAIRS = [
    (["keys", "list"], ["keys:list"]),
    (["apps", "list"], ["apps:list"]),
    (["apps", "show", "cl-same"], ["apps:info", "cl-same"]),
    (["deploys", "list", "cl-same"], ["deploys", "cl-same"]),
]


@pytest.mark.parametrize(("old", "verb"), SERVER_PAIRS, ids=[" ".join(p[0]) for p in SERVER_PAIRS])
def test_an_older_spelling_prints_what_the_ssh_verb_prints(
    server: Server, keys: dict[str, Key], old: list[str], verb: list[str]
) -> None:
    if "cl-same" not in ok(server, keys["alice"], "apps:list"):
        ok(server, keys["alice"], "apps:create", "cl-same")
    assert server.cli(*old).stdout == ok(server, keys["alice"], *verb)


def test_the_readme_names_every_verb_and_older_spelling() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [v.name for v in VERBS if v.name not in readme]
    missing += [
        a.spelling
        for a in ALIASES
        if not re.search(rf"rivetr-git {re.escape(a.spelling)}\b", readme)
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("old", "verb_argv"),
    [
        (["apps", "show", "nope"], ["apps:info", "nope"]),
        (["apps", "set", "nope", "port=99999"], ["apps:set", "nope", "port=99999"]),
        (["logs", "99999"], ["deploys:log", "99999"]),
    ],
    ids=["missing app", "bad value", "missing deployment"],
)
def test_an_older_spelling_fails_like_the_ssh_verb_on_stderr(
    server: Server, keys: dict[str, Key], old: list[str], verb_argv: list[str]
) -> None:
    local = server.cli(*old, check=False)
    remote = verb(server, keys["alice"], *verb_argv)
    # Each edge names itself (the CLI `rivetr-git:`, the SSH server `rivetr:`); the rest is one.
    assert local.returncode != 0 and local.stderr.startswith("rivetr-git: ")
    assert (local.returncode, local.stdout, local.stderr.removeprefix("rivetr-git: ")) == (
        remote.returncode,
        remote.stdout,
        remote.stderr.removeprefix("rivetr: "),
    )


def test_dump_streams_are_sent_over_ssh_not_the_local_socket(
    template: tuple[Path, int], tmp_path: Path
) -> None:
    # The daemon socket carries text lines: a binary dump would be damaged on the way.
    data_dir = copy_of(template, tmp_path / "d")
    for name, redirect in (("services:export", "> dump"), ("services:import", "< dump")):
        code, out, err = cli(data_dir, name, "db")
        assert code != 0 and out == ""
        assert f"{name} db {redirect}" in err and "run it over SSH" in err
