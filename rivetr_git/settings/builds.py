"""Settings of builds: limits, the builder for language projects and the images builds use."""

from __future__ import annotations

from dataclasses import dataclass

from rivetr_git import validate
from rivetr_git.settings.declare import _count, setting

_builder = validate.one_of(
    "buildpack", "nixpacks", "railpack", "pack", expected="buildpack, nixpacks, railpack or pack"
)


@dataclass(frozen=True)
class BuildSettings:
    build_timeout: int = setting(900, "seconds a build may take before it fails", _count)
    build_cpu_limit: str = setting(
        "", "CPUs a build may use, e.g. 1.5 ('': no limit)", validate.kept(validate.cpus)
    )
    build_memory_limit: str = setting(
        "", "memory a build may use, e.g. 2g or 512m ('': no limit)", validate.kept(validate.memory)
    )
    buildpack_builder: str = setting(
        "buildpack",
        "what builds a language project detected by its manifest (package.json, "
        "requirements.txt, go.mod, ...): buildpack (built in), nixpacks, railpack or pack",
        _builder,
    )
    python_image: str = setting(
        "python:3.12-slim",
        "base image of Python apps the built-in builder builds (a version file picks the "
        "tag of an official-style image)",
        validate.image,
    )
    node_image: str = setting(
        "node:20-slim",
        "base image of Node.js apps and of static sites' build step (built-in builder)",
        validate.image,
    )
    go_image: str = setting(
        "golang:1.22",
        "image Go apps are compiled in (built-in builder; go.mod's go line picks the tag of "
        "an official-style image)",
        validate.image,
    )
    go_runtime_image: str = setting(
        "debian:bookworm-slim",
        "image a Go app's binary runs in (needs sh, for Procfile commands and consoles)",
        validate.image,
    )
    static_server_image: str = setting(
        "nginx:1.27-alpine",
        "nginx image static sites are served with (official layout: conf.d/*.conf, "
        "/usr/share/nginx/html)",
        validate.image,
    )
    pack_builder: str = setting(
        "paketobuildpacks/builder-jammy-base",
        "builder image `pack build --builder` uses",
        validate.image,
    )
