"""Control characters from builds, apps and commands never reach a terminal raw.

The unit tests of the neutraliser are pure logic; the end-to-end test pushes over real SSH
into the real daemon and engine.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from rivetr_git.admin.render import table
from rivetr_git.terminal import RED, RESET, ByteNeutraliser, neutralise, red
from tests.helpers import SHELL_DOCKERFILE_HEAD, AppRepo, Key, Server
from tests.test_admin_verbs import ok, verb

TITLE = "\x1b]0;TITLE\x07"  # what the Dockerfile printed: retitles the terminal


def test_neutralise_shows_controls_visibly_and_keeps_tab_newline_and_crlf() -> None:
    assert neutralise(f"a{TITLE}b") == "a^[]0;TITLE^Gb"
    assert neutralise("progress 10%\rprogress 99%") == "progress 10%^Mprogress 99%"
    assert neutralise("line\r\nnext\tcol") == "line\nnext\tcol"
    assert neutralise("\x00\x7f\x9b2J") == "^@^?\\x9b2J"
    assert neutralise(neutralise(f"x{TITLE}\x9b")) == neutralise(f"x{TITLE}\x9b")
    # The server's own colours stay only where asked for (text the server wrote).
    assert neutralise(red("failed")) == "^[[31mfailed^[[0m"
    assert neutralise(red("failed") + TITLE, keep_style=True) == f"{RED}failed{RESET}^[]0;TITLE^G"
    assert "\x1b" not in table([("#1", f"msg{TITLE}")], ("ID", "MESSAGE"))


def test_byte_stream_neutraliser_handles_any_split() -> None:
    data = f"é{TITLE}{RED}x{RESET}\r\n\r".encode() + b"\xff"
    for keep in (False, True):
        whole = ByteNeutraliser(keep)
        expected = whole.feed(data) + whole.close()
        for cut in range(1, len(data)):
            split = ByteNeutraliser(keep)
            assert split.feed(data[:cut]) + split.feed(data[cut:]) + split.close() == expected
    plain = ByteNeutraliser()
    assert plain.feed(data) + plain.close() == "é^[]0;TITLE^G^[[31mx^[[0m\n^M\\xff".encode()


def test_escapes_from_build_app_commit_and_run_are_neutralised_everywhere(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    token = uuid.uuid4().hex  # a fresh RUN step: a cached one prints nothing
    dockerfile = (
        SHELL_DOCKERFILE_HEAD
        + f"""\
RUN printf '\\033]0;TITLE\\007 build-{token}\\n'
COPY www /www
EXPOSE 5000
CMD printf '\\033]0;APP\\007 app-marker\\n'; exec httpd -f -p 5000 -h /www
"""
    )
    repo = AppRepo(workdir / "app", alice, dockerfile)
    repo.git("commit", "-q", "--allow-empty", "-m", f"retitle {TITLE}")
    pushed = repo.push(server.remote("mxescape"))
    assert pushed.returncode == 0, pushed.stderr
    assert f"^[]0;TITLE^G build-{token}" in pushed.stderr
    assert "\x1b]" not in pushed.stderr and "\x07" not in pushed.stderr

    with sqlite3.connect(server.data_dir / "rivetr.db") as db:
        stored = [line for (line,) in db.execute("SELECT line FROM deployment_logs")]
    assert any(f"^[]0;TITLE^G build-{token}" in line for line in stored)
    assert not any("\x1b]" in line or "\x07" in line for line in stored)

    logs = verb(server, alice, "logs", "mxescape", "-n", "20")
    assert "^[]0;APP^G app-marker" in logs.stdout and "\x1b" not in logs.stdout
    deploys = ok(server, alice, "deploys", "mxescape")
    assert "retitle ^[]0;TITLE^G" in deploys and "\x1b" not in deploys
    ran = verb(server, alice, "run", "mxescape", "printf", "clear\\033[2J\\033[Hdone\\r\\n")
    assert ran.returncode == 0 and ran.stdout == "clear^[[2J^[[Hdone\n"
