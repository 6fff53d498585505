"""Client mode's plan (rivetr_git/cli/remote.py): remote URLs, command lines, when it applies."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from rivetr_git.admin.verbs import BY_NAME
from rivetr_git.cli.main import main
from rivetr_git.cli.parse import parse_verb_call
from rivetr_git.cli.remote import (
    CLIENT_MODE_HELP,
    RemoteUrl,
    app_from_path,
    client_target,
    parse_remote_url,
    shape_argv,
)
from rivetr_git.errors import ValidationError
from tests.helpers import run


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ssh://git@example.com:2222/hello", RemoteUrl("example.com", 2222, "git", "/hello")),
        (
            "ssh://git@Example.COM:2222/hello.git",
            RemoteUrl("example.com", 2222, "git", "/hello.git"),
        ),
        ("ssh://example.com/hello", RemoteUrl("example.com", None, None, "/hello")),
        ("git+ssh://git@10.0.0.1:22/hello", RemoteUrl("10.0.0.1", 22, "git", "/hello")),
        ("ssh://git@[::1]:2222/hello", RemoteUrl("::1", 2222, "git", "/hello")),
        ("git@example.com:hello.git", RemoteUrl("example.com", None, "git", "hello.git")),
        ("git@example.com:/hello", RemoteUrl("example.com", None, "git", "/hello")),
        ("myserver:hello", RemoteUrl("myserver", None, None, "hello")),
        ("git@[::1]:hello", RemoteUrl("::1", None, "git", "hello")),
        ("git@[example.com:2200]:hello", RemoteUrl("example.com", 2200, "git", "hello")),
    ],
)
def test_ssh_remote_urls_are_parsed(raw: str, expected: RemoteUrl) -> None:
    assert parse_remote_url(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/srv/git/hello.git",
        "./hello",
        "../a:b",
        "file:///srv/hello.git",
        "https://example.com/hello.git",
        "C:/repos/hello",
        "ssh://git@host:99999999/hello",
        "ssh:///hello",
    ],
)
def test_non_ssh_remotes_are_refused_with_an_example(raw: str) -> None:
    with pytest.raises(ValidationError, match=r"ssh://git@HOST:2222/APP|bad port"):
        parse_remote_url(raw)


@pytest.mark.parametrize(
    ("path", "app"),
    [("hello", "hello"), ("hello.git", "hello"), ("/my-api", "my-api"), ("/my-api.git", "my-api")],
)
def test_app_comes_from_the_remote_path(path: str, app: str) -> None:
    assert app_from_path(path) == app


@pytest.mark.parametrize("path", ["/", "", "/Hello", "/a/b", "../hello", "/-x", "/hello.git.git"])
def test_remote_paths_that_name_no_app_are_refused(path: str) -> None:
    with pytest.raises(ValidationError, match="invalid app name"):
        app_from_path(path)


def test_per_app_verbs_get_the_app_right_after_the_verb() -> None:
    assert shape_argv(BY_NAME["config:set"], "hello", ["K=V", "--no-restart"]) == [
        "config:set",
        "hello",
        "K=V",
        "--no-restart",
    ]
    assert shape_argv(BY_NAME["releases"], "hello", []) == ["releases", "hello"]
    assert shape_argv(BY_NAME["keys:list"], "hello", []) == ["keys:list"]
    assert shape_argv(BY_NAME["access:grant"], None, ["bob", "x"]) == ["access:grant", "bob", "x"]
    with pytest.raises(ValidationError, match="--app"):
        shape_argv(BY_NAME["logs"], None, [])
    with pytest.raises(ValidationError, match="invalid app name"):
        shape_argv(BY_NAME["logs"], "-rf", [])


def test_exotic_values_survive_the_exec_command() -> None:
    values = ["K=a b", "Q='\"`$(x)`", "N=line1\nline2", "E==", "U=héllo ✓", "T=\t", "Z="]
    argv = shape_argv(BY_NAME["config:set"], "hello", values)
    assert shlex.split(shlex.join(argv)) == ["config:set", "hello", *values]


@pytest.mark.parametrize(
    ("argv", "verb", "args", "remote", "app", "local"),
    [
        (["config:set", "K=V"], "config:set", ("K=V",), None, None, False),
        (
            ["--remote", "prod", "config:set", "K=V", "--app", "x"],
            "config:set",
            ("K=V",),
            "prod",
            "x",
            False,
        ),
        (["--app=x", "logs", "-n", "5", "--remote=prod"], "logs", ("-n", "5"), "prod", "x", False),
        (["--data-dir", "d", "releases", "hello"], "releases", ("hello",), None, None, True),
        (["releases", "hello", "--config=f.toml"], "releases", ("hello",), None, None, True),
        # run's command is passed as it is, even an --app of its own
        (
            ["run", "--app", "x", "sh", "-c", "echo --app y"],
            "run",
            ("sh", "-c", "echo --app y"),
            None,
            "x",
            False,
        ),
        (["config:set", "--", "--app"], "config:set", ("--", "--app"), None, None, False),
    ],
)
def test_verb_command_lines_are_split(
    argv: list[str],
    verb: str,
    args: tuple[str, ...],
    remote: str | None,
    app: str | None,
    local: bool,
) -> None:
    call = parse_verb_call(argv)
    assert call is not None
    assert (call.verb.name, call.args, call.remote, call.app, call.local) == (
        verb,
        args,
        remote,
        app,
        local,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve"],
        ["keys", "list"],
        ["--help"],
        ["--version"],
        ["--data-dir", "d", "apps", "list"],
        ["--", "releases"],
        ["releasesx", "hello"],
    ],
)
def test_other_command_lines_are_left_to_the_local_cli(argv: list[str]) -> None:
    assert parse_verb_call(argv) is None


def test_a_client_option_without_its_value_is_an_error() -> None:
    with pytest.raises(ValidationError, match="--app needs a value"):
        parse_verb_call(["releases", "--app"])


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    (repo / "sub").mkdir(parents=True)
    run(["git", "init", "-q"], cwd=repo)
    run(["git", "remote", "add", "rivetr", "ssh://git@example.com:2222/hello.git"], cwd=repo)
    run(["git", "remote", "add", "prod", "git@prod.example.com:other"], cwd=repo)
    run(["git", "remote", "add", "local", "/srv/hello.git"], cwd=repo)
    return repo


def test_a_checkout_with_a_rivetr_remote_means_client_mode(checkout: Path) -> None:
    target = client_target(["config:set", "K=a b"], {}, cwd=str(checkout / "sub"))
    assert target is not None
    assert target.remote == "rivetr"
    assert target.url == RemoteUrl("example.com", 2222, "git", "/hello.git")
    assert target.command == "config:set hello 'K=a b'"


def test_remote_and_app_options_choose_the_server_and_app(checkout: Path) -> None:
    target = client_target(["--remote", "prod", "releases"], {}, cwd=str(checkout))
    assert target is not None
    assert (target.url.host, target.command) == ("prod.example.com", "releases other")
    target = client_target(["releases", "--app", "third"], {}, cwd=str(checkout))
    assert target is not None
    assert (target.url.host, target.command) == ("example.com", "releases third")


def test_a_data_dir_means_local_mode(checkout: Path) -> None:
    assert client_target(["releases"], {"RIVETR_DATA_DIR": "/x"}, cwd=str(checkout)) is None
    assert client_target(["--data-dir", "/x", "releases"], {}, cwd=str(checkout)) is None
    assert client_target(["--config", "f.toml", "releases"], {}, cwd=str(checkout)) is None
    with pytest.raises(ValidationError, match="one or the other"):
        client_target(["--remote", "prod", "--data-dir", "/x", "releases"], {}, cwd=str(checkout))


def test_no_rivetr_remote_means_local_mode(tmp_path: Path) -> None:
    assert client_target(["releases", "hello"], {}, cwd=str(tmp_path)) is None  # no checkout
    run(["git", "init", "-q"], cwd=tmp_path)
    assert client_target(["releases", "hello"], {}, cwd=str(tmp_path)) is None  # no remote


def test_a_named_remote_must_exist(checkout: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="No such remote 'nope'"):
        client_target(["--remote", "nope", "releases"], {}, cwd=str(checkout))
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(ValidationError, match="not a git repository"):
        client_target(["--remote", "rivetr", "releases"], {}, cwd=str(outside))


def test_remotes_that_are_no_ssh_url_or_name_no_app_are_explained(checkout: Path) -> None:
    with pytest.raises(ValidationError, match="not an SSH URL"):
        client_target(["--remote", "local", "releases"], {}, cwd=str(checkout))
    run(["git", "remote", "set-url", "prod", "git@prod.example.com:a/b"], cwd=checkout)
    with pytest.raises(ValidationError, match=r"does not name an app.*--app NAME"):
        client_target(["--remote", "prod", "releases"], {}, cwd=str(checkout))
    # A verb about no app needs no app in the URL.
    target = client_target(["--remote", "prod", "keys:list"], {}, cwd=str(checkout))
    assert target is not None and target.command == "keys:list"


def test_the_cli_help_explains_client_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert CLIENT_MODE_HELP in out
    assert "--remote NAME" in out and "--app NAME" in out
