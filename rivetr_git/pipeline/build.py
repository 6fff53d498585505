"""Stage *building*: pick the build type (pipeline/detect.py), then build the image with
it, streaming every line."""

from __future__ import annotations

import asyncio
import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rivetr_git import validate
from rivetr_git.errors import BuildFailed
from rivetr_git.models import App
from rivetr_git.pipeline.builders import buildpack, cli_build, compose, static_site
from rivetr_git.pipeline.builders.context import ignore_dockerfile, read_tree, subtree
from rivetr_git.pipeline.builders.detect import Detection, choose
from rivetr_git.pipeline.builders.dockerfile_stages import label_stages, labelled_note
from rivetr_git.pipeline.builders.recipe import DOCKERFILE, Images, stage_end
from rivetr_git.pipeline.labels import image_tag, labels
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import BuildSpec, Runtime
from rivetr_git.settings import Settings


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use: the settings build_timeout, build_cpu_limit and
    build_memory_limit, parsed. None: no limit."""

    timeout: float  # seconds
    cpus: float | None = None
    memory: int | None = None  # bytes
    memory_text: str = ""  # build_memory_limit as written, e.g. '512m' ('' when none)

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildLimits:
        """Raises ValueError for a value load_settings would have refused."""
        cpus_text = settings.build_cpu_limit.strip()
        memory_text = settings.build_memory_limit.strip()
        return cls(
            timeout=float(settings.build_timeout),
            cpus=validate.cpus(cpus_text) if cpus_text else None,
            memory=validate.memory(memory_text) if memory_text else None,
            memory_text=memory_text,
        )


@dataclass(frozen=True)
class BuildOptions:
    """The server settings every build reads."""

    limits: BuildLimits
    buildpack_builder: str = "buildpack"
    static_server_image: str = "nginx:1.27-alpine"
    pack_builder: str = "paketobuildpacks/builder-jammy-base"
    images: Images = field(default_factory=Images)  # the built-in builder's base images

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildOptions:
        return cls(
            limits=BuildLimits.from_settings(settings),
            buildpack_builder=settings.buildpack_builder,
            static_server_image=settings.static_server_image,
            pack_builder=settings.pack_builder,
            images=Images(
                python=settings.python_image,
                node=settings.node_image,
                go=settings.go_image,
                go_runtime=settings.go_runtime_image,
                static_server=settings.static_server_image,
            ),
        )


@dataclass(frozen=True)
class Built:
    image: str  # the tag of the built image
    detection: Detection
    group: compose.Group | None = None  # compose: the project to start


async def build(
    runtime: Runtime,
    app: App,
    deployment_id: int,
    instance: str,
    context_tar: Path,
    log: DeployLog,
    options: BuildOptions,
    *,
    build_env: Mapping[str, str],
    repo_build_type: str | None = None,
) -> Built:
    """Choose the build type for the pushed tree and build the image.

    `build_env` holds the app's build-time variables, already decrypted; `repo_build_type`
    is `[build] type` of the repo's rivetr.toml (None: not set). Raises BuildFailed.
    """
    tree = await asyncio.to_thread(read_tree, context_tar)
    found = choose(
        tree,
        app.build_type,
        repo_build_type,
        dockerfile=app.dockerfile,
        publish_dir=app.publish_dir,
        builder=options.buildpack_builder,
    )
    log.info(f"build type: {found.label} ({found.reason})")
    tag = image_tag(instance, app.name, deployment_id)
    if found.build_type == "compose":
        assert found.compose_file is not None
        group = await compose.build(
            runtime,
            context_tar,
            context_tar.parent / "src",
            found.compose_file,
            instance,
            app.name,
            deployment_id,
            app.compose_service,
            log,
            options.limits.timeout,
            app.compose_bind_list,
        )
        return Built(image=group.image, detection=found, group=group)
    owner = labels(instance, app.name, deployment_id)
    await _build_image(runtime, app, found, context_tar, tag, log, options, build_env, owner)
    return Built(image=tag, detection=found)


async def _build_image(
    runtime: Runtime,
    app: App,
    found: Detection,
    context_tar: Path,
    tag: str,
    log: DeployLog,
    options: BuildOptions,
    build_env: Mapping[str, str],
    owner: Mapping[str, str],
) -> None:
    """The image `tag`, built the way the (non-compose) build type `found` says; `owner`:
    the deployment's labels, for the build stages of the built-in builder's recipes."""
    if found.build_type == "dockerfile":
        assert found.dockerfile is not None  # detection names the file it found
        await _build_dockerfile(
            runtime, app, context_tar, found.dockerfile, tag, log, options, build_env, owner
        )
    elif found.build_type == "static":
        assert found.publish_dir is not None
        await _build_static(runtime, app, context_tar, found.publish_dir, tag, log, options)
    elif found.build_type == "buildpack":
        await _build_buildpack(
            runtime, app, found, context_tar, tag, log, options, build_env, owner
        )
    elif found.build_type in cli_build.TOOLS:
        await cli_build.build(
            runtime,
            found.build_type,
            context_tar,
            context_tar.parent / "src",
            tag,
            log,
            build_env=build_env,
            timeout=options.limits.timeout,
            no_cache=app.build_no_cache,
            pack_builder=options.pack_builder,
        )
    else:
        raise BuildFailed(f"build type {found.build_type} cannot build here yet")


async def _build_dockerfile(
    runtime: Runtime,
    app: App,
    context_tar: Path,
    dockerfile: str,
    tag: str,
    log: DeployLog,
    options: BuildOptions,
    build_env: Mapping[str, str],
    owner: Mapping[str, str],
) -> None:
    """Build type *dockerfile*: the pushed tree (or the app's build_context of it). The
    stages the image only copies from end labelled with `owner` (dockerfile_stages)."""
    context = context_tar
    if app.build_context:
        context, dockerfile = await _narrow(
            context_tar, context_tar.parent, app.build_context, dockerfile
        )
    context, dockerfile, stages = await _label_stages(context, dockerfile, owner, app.build_target)
    if stages:
        log.info(labelled_note(stages))
    await docker_build(
        runtime,
        context,
        tag,
        dockerfile,
        log,
        limits=options.limits,
        target=app.build_target,
        no_cache=app.build_no_cache,
        build_args=build_env,
        stage_labels=owner if stages else None,
    )


async def _label_stages(
    context: Path, dockerfile: str, owner: Mapping[str, str], target: str | None
) -> tuple[Path, str, list[str]]:
    """The context and Dockerfile name to build, and the names of the stages labelled:
    the Dockerfile with stage_end labels as DOCKERFILE (left out of the context by the
    .dockerignore) when it has stages to label, else `context` and `dockerfile` as given."""
    _, content = await asyncio.to_thread(_read_dockerfile, context, dockerfile)
    labelled, stages = label_stages(content, stage_end(owner), target)
    if not stages:
        return context, dockerfile, []
    tree = await asyncio.to_thread(read_tree, context)
    staged = context.parent / "staged-context.tar"
    extra = {DOCKERFILE: labelled, **ignore_dockerfile(tree)}
    await asyncio.to_thread(subtree, context, staged, ".", "", extra)
    return staged, DOCKERFILE, stages


async def _build_static(
    runtime: Runtime,
    app: App,
    context_tar: Path,
    publish_dir: str,
    tag: str,
    log: DeployLog,
    options: BuildOptions,
) -> None:
    """Build type *static*: `publish_dir` of the tree served by the static server image."""
    context = context_tar.parent / "static-context.tar"
    files = await static_site.prepare(
        context_tar, context, publish_dir, options.static_server_image
    )
    log.info(f"serving {files} files of {publish_dir}/ with {options.static_server_image}")
    # No build args: env vars never enter a static image, only the running container.
    await docker_build(
        runtime, context, tag, "Dockerfile", log, limits=options.limits, no_cache=app.build_no_cache
    )


async def _build_buildpack(
    runtime: Runtime,
    app: App,
    found: Detection,
    context_tar: Path,
    tag: str,
    log: DeployLog,
    options: BuildOptions,
    build_env: Mapping[str, str],
    owner: Mapping[str, str],
) -> None:
    """Build type *buildpack*: a Dockerfile generated for the language, built as the
    dockerfile type builds (limits, build-time env as build args, the layer cache)."""
    context = context_tar.parent / "buildpack-context.tar"
    made = await buildpack.prepare(
        context_tar, context, found, options.images, list(build_env), owner
    )
    for note in made.notes:
        log.info(note)
    await docker_build(
        runtime,
        context,
        tag,
        DOCKERFILE,
        log,
        limits=options.limits,
        no_cache=app.build_no_cache,
        build_args=build_env,
        stage_labels=owner,
    )


async def _narrow(
    context_tar: Path, work: Path, directory: str, dockerfile: str
) -> tuple[Path, str]:
    """The build context cut down to `directory`; a Dockerfile outside it (or a symlink to
    one) comes along under a name of its own (as `docker build -f` does)."""
    prefix = directory.rstrip("/") + "/"
    real, content = await asyncio.to_thread(_read_dockerfile, context_tar, dockerfile)
    extra: dict[str, bytes] = {}
    if real.startswith(prefix):
        inside = real[len(prefix) :]
    else:
        inside = ".rivetr.Dockerfile"
        extra[inside] = content
    target = work / "narrow-context.tar"
    await asyncio.to_thread(subtree, context_tar, target, directory, "", extra)
    return target, inside


_MAX_LINKS = 8


def _read_dockerfile(tar: Path, name: str) -> tuple[str, bytes]:
    """The path `name` resolves to in the commit (following symlinks inside the tree) and
    that file's content. Raises BuildFailed for links that leave the tree or lead nowhere."""
    path = name
    with tarfile.open(tar) as archive:
        for _ in range(_MAX_LINKS):
            try:
                member = archive.getmember(path)
            except KeyError:
                raise BuildFailed(_unreadable(name, path, "is not in the pushed commit")) from None
            if not member.issym():
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise BuildFailed(_unreadable(name, path, "is not a regular file"))
                return path, handle.read()
            link = member.linkname
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
            if link.startswith("/") or path == ".." or path.startswith("../"):
                raise BuildFailed(_unreadable(name, link, "is outside the pushed tree"))
    raise BuildFailed(
        f"{name} is a chain of more than {_MAX_LINKS} symlinks; commit the Dockerfile itself"
    )


def _unreadable(name: str, path: str, why: str) -> str:
    via = "" if path == name else f"links to {path}, which "
    return (
        f"the Dockerfile {name} {via}{why}; commit the Dockerfile itself (or a symlink "
        "to a file in the repository), or set the app's dockerfile"
    )


async def docker_build(
    runtime: Runtime,
    context_tar: Path,
    tag: str,
    dockerfile: str,
    log: DeployLog,
    *,
    limits: BuildLimits | None = None,
    target: str | None = None,
    no_cache: bool = False,
    build_args: Mapping[str, str] | None = None,
    stage_labels: Mapping[str, str] | None = None,
) -> None:
    """Build `context_tar` with `dockerfile` into `tag` (`stage_labels`: BuildSpec's).
    Raises BuildFailed with the builder's message, or naming the limit (build_timeout,
    build_memory_limit) it ran into."""
    # No build labels: the legacy builder turns each into a LABEL step, a container and
    # a layer on every push. The tag's repository (rivetr-<instance>/<app>) identifies it.
    spec = BuildSpec(
        context_tar=context_tar,
        tag=tag,
        dockerfile=dockerfile,
        timeout=limits.timeout if limits else None,
        cpus=limits.cpus if limits else None,
        memory=limits.memory if limits else None,
        target=target,
        no_cache=no_cache,
        build_args=dict(build_args or {}),
        stage_labels=dict(stage_labels or {}),
    )
    await runtime.build(spec, lambda line: log.output(line, "build"))
