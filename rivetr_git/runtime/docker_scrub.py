"""Keeping build-time values out of a built image: its history, config and layers.

The legacy builder records the build args in scope of every RUN step in the image's history
(`|1 NAME=value /bin/sh -c ...`) and in its intermediate images. BuildKit secrets would
avoid that, but neither docker-py nor this engine's legacy builder can use them. So after a
build that had build args, the image is saved, its config rewritten with each `NAME=value`
replaced by `NAME=<build-time value>`, loaded again under the same tag, and the original
image (with the intermediate ones holding the values) removed, and so are the images of
the build's labelled stages (multi-stage recipes of the built-in builder). A value that is
still in the config (an `ENV X=$ARG`, a LABEL) or in a layer's files (a step wrote it) fails
the build: it would be readable by anyone who can pull the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker.errors

from rivetr_git.errors import BuildFailed
from rivetr_git.runtime.docker_images import labelled_images

REDACTED = "<build-time value>"
# Shorter values ("1", "true") occur in any file by chance: layers are checked for values
# of at least this many characters (the config is checked for every NAME=value pair).
MIN_SCAN = 8
_CHUNK = 1 << 20


def scrub_image(api: Any, tag: str, build_args: Mapping[str, str], work: Path) -> str:
    """Rewrite image `tag` so no value of `build_args` is in it; return the new image id.
    Raises BuildFailed (after removing the image) when a value is baked into it."""
    old_id = str(api.inspect_image(tag)["Id"])
    saved, rewritten = work / "image-saved.tar", work / "image-scrubbed.tar"
    try:
        with open(saved, "wb") as out:
            for chunk in api.get_image(tag):
                out.write(chunk)
        try:
            _rewrite(saved, rewritten, build_args)
        except BuildFailed:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_image(old_id, force=True)
            raise
        with open(rewritten, "rb") as data:
            for _ in api.load_image(data):
                pass  # the stream reports progress; errors raise
        new_id = str(api.inspect_image(tag)["Id"])
        if new_id != old_id:
            # Untagged now; removing it also removes the intermediate images of this build.
            with contextlib.suppress(docker.errors.APIError):
                api.remove_image(old_id, noprune=False)
        return new_id
    finally:
        saved.unlink(missing_ok=True)
        rewritten.unlink(missing_ok=True)


def remove_stages(api: Any, stage_labels: Mapping[str, str]) -> None:
    """Remove the untagged images of the build stages labelled `stage_labels` (and their
    parents no other image uses): their history holds the build args' values."""
    for image in labelled_images(api, stage_labels):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_image(image, noprune=False)


def redact(text: str, build_args: Mapping[str, str]) -> str:
    for name, value in build_args.items():
        if value:
            text = text.replace(f"{name}={value}", f"{name}={REDACTED}")
    return text


def _redact_json(node: Any, build_args: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return redact(node, build_args)
    if isinstance(node, list):
        return [_redact_json(item, build_args) for item in node]
    if isinstance(node, dict):
        return {key: _redact_json(value, build_args) for key, value in node.items()}
    return node


def _rewrite(saved: Path, target: Path, build_args: Mapping[str, str]) -> None:
    """Copy the `docker save` tar with its image config redacted; check every layer."""
    with tarfile.open(saved) as src:
        manifest_member = src.getmember("manifest.json")
        manifest = json.loads(_read(src, manifest_member))
        config_name = manifest[0]["Config"]
        config = _redact_json(json.loads(_read(src, src.getmember(config_name))), build_args)
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        where = "the image's config (an ENV or LABEL made from it?)"
        _check(config_bytes.decode(), build_args, where, min_len=MIN_SCAN)
        # Short values ("1", "on") occur anywhere by chance: look for them as whole values.
        settings = config.get("config") or {}
        whole = {e.partition("=")[2] for e in settings.get("Env") or []}
        whole.update((settings.get("Labels") or {}).values())
        _check(
            "\0".join(sorted(whole)),
            {n: v for n, v in build_args.items() if v in whole},
            where,
            min_len=1,
        )
        new_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest[0]["Config"] = new_name
        with tarfile.open(target, "w") as out:
            for member in src:
                if member.name in (config_name, "manifest.json"):
                    continue
                handle = src.extractfile(member) if member.isfile() else None
                if handle is not None and member.name.endswith("/json"):
                    # The legacy format's per-layer metadata holds the step's command too.
                    data = json.dumps(
                        _redact_json(json.loads(handle.read()), build_args), separators=(",", ":")
                    ).encode()
                    member.size, handle = len(data), io.BytesIO(data)
                elif handle is not None and member.name != "repositories":
                    _scan_layer(src, member, build_args)  # layers (named by the format)
                    handle = src.extractfile(member)
                out.addfile(member, handle)
            for name, data in (
                (new_name, config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise BuildFailed(f"the saved image has no file {member.name}")
    return handle.read()


def _check(text: str, build_args: Mapping[str, str], where: str, min_len: int) -> None:
    for name, value in build_args.items():
        if len(value) >= min_len and value in text:
            raise BuildFailed(
                f"the value of build-time variable {name} ended up in {where}; "
                "build-time values must not be stored in the image: use them "
                "only in RUN steps, and never write them to files, ENV or LABEL"
            )


def _scan_layer(
    archive: tarfile.TarFile, member: tarfile.TarInfo, build_args: Mapping[str, str]
) -> None:
    needles = {name: value.encode() for name, value in build_args.items() if len(value) >= MIN_SCAN}
    if not needles:
        return
    overlap = max(len(v) for v in needles.values())
    handle = archive.extractfile(member)
    assert handle is not None  # a regular file
    tail = b""
    while chunk := handle.read(_CHUNK):
        window = tail + chunk
        for name, value in needles.items():
            if value in window:
                raise BuildFailed(
                    f"the value of build-time variable {name} was written into the image's "
                    "files by a build step; build-time values must not be stored in the "
                    "image: use them in RUN steps without writing them to files"
                )
        tail = window[-overlap:]
