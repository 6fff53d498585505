"""The local Debian base images of the language-build tests (scripts/build-test-images):
built once with mmdebstrap, then found by their tags."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build-test-images"


def base_images(podman: bool = False) -> dict[str, str]:
    """NAME -> image (python, node, go, slim), built when missing (the first run takes
    minutes); with `podman`, also in Podman's storage."""
    out = run([str(SCRIPT), *(["--podman"] if podman else [])], timeout=1800).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def image_env(images: dict[str, str]) -> dict[str, str]:
    """The settings that point the built-in builder at them."""
    return {
        "RIVETR_PYTHON_IMAGE": images["python"],
        "RIVETR_NODE_IMAGE": images["node"],
        "RIVETR_GO_IMAGE": images["go"],
        "RIVETR_GO_RUNTIME_IMAGE": images["slim"],
    }
