"""Unit tests for the Procfile parser (pure logic, no engine)."""

from __future__ import annotations

import pytest

from rivetr_git.errors import CheckoutFailed
from rivetr_git.pipeline.procfile import Procfile, parse, shell


def test_no_procfile_is_one_web_process_from_the_image() -> None:
    parsed = parse(None)
    assert parsed == Procfile()
    assert parsed.web is None and parsed.release is None
    assert parsed.types() == ["web"]


def test_types_commands_comments_and_blank_lines() -> None:
    parsed = parse(
        "# a comment\n"
        "web: gunicorn app:app --bind 0.0.0.0:$PORT\n"
        "\n"
        "worker:   python worker.py --queue=a:b  \n"
        "release: ./manage.py migrate\r\n"
        "clock_2-x: sleep 60\n"
    )
    assert parsed.web == "gunicorn app:app --bind 0.0.0.0:$PORT"
    assert parsed.release == "./manage.py migrate"
    # The command keeps every colon after the first.
    assert parsed.background() == {
        "worker": "python worker.py --queue=a:b",
        "clock_2-x": "sleep 60",
    }
    assert parsed.types() == ["web", "worker", "clock_2-x"]


def test_a_procfile_without_web_still_runs_web_from_the_image() -> None:
    parsed = parse("worker: run-jobs\n")
    assert parsed.web is None
    assert parsed.types() == ["web", "worker"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web: ok\njust words\n", "Procfile line 2: 'just words' is not `type: command`"),
        ("Web: x\n", "Procfile line 1: process type 'Web' must start with a lower-case letter"),
        ("web: a\n\n1st: b\n", "Procfile line 3: process type '1st'"),
        ("my worker: b\n", "Procfile line 1: process type 'my worker'"),
        ("worker:\n", "Procfile line 1: process type 'worker' has no command"),
        ("web: a\nweb: b\n", "Procfile line 2: process type 'web' is defined twice"),
        (": b\n", "Procfile line 1: process type ''"),
    ],
)
def test_bad_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(CheckoutFailed) as caught:
        parse(text)
    assert caught.value.stage == "cloning"
    assert message in caught.value.reason


def test_too_many_types() -> None:
    text = "".join(f"t{i}: x\n" for i in range(33))
    with pytest.raises(CheckoutFailed, match="33 process types; at most 32"):
        parse(text)


def test_commands_run_through_the_shell() -> None:
    assert shell("echo $PORT && run") == ["sh", "-c", "echo $PORT && run"]
