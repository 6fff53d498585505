"""Where an app's own multi-stage Dockerfile gets its stage_end label (pure: no engine)."""

from __future__ import annotations

from rivetr_git.pipeline.builders.dockerfile_stages import label_stages

STEP = 'LABEL "rivetr.deployment"="7"\n'

THREE = b"""\
FROM golang AS build
RUN go build -o /app .

FROM node AS assets
RUN npm run build
FROM debian
COPY --from=build /app /app
COPY --from=assets /dist /dist
"""


def test_each_stage_the_image_copies_from_ends_with_the_label() -> None:
    out, stages = label_stages(THREE, STEP, None)
    assert stages == ["build", "assets"]
    assert out.decode() == (
        "FROM golang AS build\n"
        "RUN go build -o /app .\n"
        "\n"
        f"{STEP}"
        "FROM node AS assets\n"
        "RUN npm run build\n"
        f"{STEP}"
        "FROM debian\n"
        "COPY --from=build /app /app\n"
        "COPY --from=assets /dist /dist\n"
    )


def test_a_single_stage_dockerfile_is_left_as_it_is() -> None:
    single = b"FROM debian\nRUN echo hi\n"
    assert label_stages(single, STEP, None) == (single, [])
    assert label_stages(b"", STEP, None) == (b"", [])


def test_a_stage_another_builds_from_is_not_labelled() -> None:
    """Its image is a parent of the next stage's (removed with it), and a label that
    changes on every push would keep that stage's steps from the cache."""
    chain = (
        b"FROM node AS Base\nRUN npm ci\n"
        b"FROM base AS build\nRUN make\n"
        b"FROM base\nCOPY --from=build /o /o\n"
    )
    out, stages = label_stages(chain, STEP, None)
    assert stages == ["build"]
    assert out.decode().split("\n")[4] == STEP.strip()


def test_the_target_stage_is_the_image_and_is_not_labelled() -> None:
    out, stages = label_stages(THREE, STEP, "Build")
    assert stages == ["assets"]
    assert out.decode().count("LABEL") == 1


def test_unnamed_stages_are_named_by_their_index() -> None:
    out, stages = label_stages(b"FROM a\nRUN x\nFROM b\nCOPY --from=0 /x /x\n", STEP, None)
    assert stages == ["0"]
    assert out.decode() == f"FROM a\nRUN x\n{STEP}FROM b\nCOPY --from=0 /x /x\n"


def test_continuations_comments_flags_and_the_escape_directive() -> None:
    text = (
        b"# escape=`\n"
        b"FROM --platform=linux/amd64 golang AS build\n"
        b"RUN echo a `\n"
        b"# a comment inside the instruction\n"
        b"  && echo b\n"
        b"from debian\n"
        b"COPY --from=build /a /a\n"
    )
    out, stages = label_stages(text, STEP, None)
    assert stages == ["build"]
    assert out.decode().split("\n")[5:7] == [STEP.strip(), "from debian"]


def test_a_dockerfile_that_is_not_utf8_is_left_to_the_engine() -> None:
    text = b"FROM a AS b\nRUN echo \xff\nFROM c\n"
    assert label_stages(text, STEP, None) == (text, [])


def test_crlf_line_ends_survive() -> None:
    text = b"FROM a AS b\r\nRUN x\r\nFROM c\r\nCOPY --from=b /x /x\r\n"
    out, stages = label_stages(text, STEP, None)
    assert stages == ["b"]
    assert out == b"FROM a AS b\r\nRUN x\r\n" + STEP.encode() + b"FROM c\r\nCOPY --from=b /x /x\r\n"
