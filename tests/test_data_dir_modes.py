"""The data dir is private: 0700, its files and dirs closed to group and others, also when
an older version left them open. Against the real daemon and local CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rivetr_git.store.data_dir import make_private
from tests.helpers import Server


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def open_to_others(data_dir: Path) -> dict[str, str]:
    """Top-level entries (and the dir itself) with any group/other bit, as name: mode."""
    found = {
        p.name: oct(mode(p)) for p in data_dir.iterdir() if not p.is_symlink() and mode(p) & 0o077
    }
    if mode(data_dir) != 0o700:
        found["."] = oct(mode(data_dir))
    return found


def test_a_fresh_server_keeps_its_data_dir_private(own_server: Server) -> None:
    data = own_server.data_dir
    own_server.cli("apps:create", "mxmodes")  # a repository too
    names = {p.name for p in data.iterdir()}
    assert {"rivetr.db", "rivetr.db-wal", "master.key", "repos", "hooks"} <= names, names
    assert open_to_others(data) == {}
    repo = data / "repos" / "mxmodes.git"
    assert mode(repo) & 0o077 == 0 and mode(repo / "config") & 0o077 == 0


def test_an_open_data_dir_is_made_private_at_start(own_server: Server) -> None:
    data = own_server.data_dir
    own_server.cli("apps:create", "mxmodes")
    own_server.stop()
    data.chmod(0o755)
    for path in data.iterdir():
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert "rivetr.db" in open_to_others(data)
    (data / "master.key").chmod(0o600)  # an open one refuses the start (test_env_deploy)
    own_server.start()
    assert open_to_others(data) == {}
    assert mode(data / "rivetr.db") == 0o600 and mode(data / "repos") == 0o700


def test_make_private_creates_the_dir_0700_and_leaves_links_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o644)
    data = tmp_path / "a" / "data"
    umask = os.umask(0o022)
    try:
        make_private(data)
        assert mode(data) == 0o700
        assert os.umask(0o077) == 0o077  # what it set for this process
        (data / "link").symlink_to(outside)
        make_private(data)
    finally:
        os.umask(umask)  # the test process's own
    assert mode(outside) == 0o644  # a symlink's target is not the data dir's to change


def test_extracted_build_dirs_stay_readable_for_the_image_under_the_private_umask(
    tmp_path: Path,
) -> None:
    import io
    import tarfile

    from rivetr_git.pipeline.builders.context import extract

    source = tmp_path / "context.tar"
    with tarfile.open(source, "w") as archive:  # git stores files only, no dirs
        info = tarfile.TarInfo("app/static/index.html")
        info.size, info.mode = 2, 0o644
        archive.addfile(info, io.BytesIO(b"hi"))
    umask = os.umask(0o077)
    try:
        extract(source, tmp_path / "src")
    finally:
        os.umask(umask)
    assert mode(tmp_path / "src" / "app" / "static") == 0o755
    assert mode(tmp_path / "src" / "app" / "static" / "index.html") == 0o644
