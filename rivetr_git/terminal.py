"""Text from builds, apps and commands made safe to show in a terminal.

A pushed Dockerfile or an app controls what it prints; raw, an escape sequence would reach
the pusher's terminal (retitle it, rewrite what is on screen, on some terminals worse).
Every control character except tab and newline is shown visibly instead: C0 and DEL in
caret notation (ESC is `^[`, BEL `^G`, a lone CR `^M`), C1 as `\\x9b`. A CR right before a
newline is dropped (CRLF line ends are common and harmless). The result is printable, so
neutralising twice changes nothing. The server's own styling (its colours) is added after
this, never passed through it.
"""

from __future__ import annotations

import codecs
import re

# The server's own styling: the only escape sequences it writes itself.
RED, RESET = "\x1b[31m", "\x1b[0m"
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_KEEPING_STYLE = re.compile(f"{re.escape(RED)}|{re.escape(RESET)}|{_CONTROL.pattern}")


def red(text: str) -> str:
    """`text` (already neutralised) shown in red."""
    return f"{RED}{text}{RESET}"


def _visible(match: re.Match[str]) -> str:
    if len(match.group()) > 1:
        return match.group()  # one of the server's own styles
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"\\x{code:02x}"


def neutralise(text: str, keep_style: bool = False) -> str:
    """`text` with every control character but tab and newline shown visibly; with
    `keep_style`, the server's own colour codes stay (for text the server wrote, whose
    untrusted parts were neutralised when it was written, e.g. a stored deploy log)."""
    pattern = _CONTROL_KEEPING_STYLE if keep_style else _CONTROL
    return pattern.sub(_visible, text.replace("\r\n", "\n"))


class ByteNeutraliser:
    """Neutralises a byte stream fed in chunks of any size (a multi-byte character, a CRLF
    or a kept style may be split between two). Bytes that are not UTF-8 come out as
    `\\xNN`."""

    def __init__(self, keep_style: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        self._keep_style = keep_style
        self._held = ""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        text = self._held + self._decoder.decode(data, final)
        self._held = "" if final else _unfinished_tail(text, self._keep_style)
        text = text[: len(text) - len(self._held)]
        return neutralise(text, self._keep_style).encode()

    def close(self) -> bytes:
        return self.feed(b"", final=True)


def _unfinished_tail(text: str, keep_style: bool) -> str:
    """The end of `text` that the next chunk may complete: a CR (CRLF?) or the start of a
    kept style."""
    if keep_style:
        escape = text.rfind("\x1b", max(0, len(text) - len(RED)))
        if escape >= 0 and any(
            s.startswith(text[escape:]) and s != text[escape:] for s in (RED, RESET)
        ):
            return text[escape:]
    return "\r" if text.endswith("\r") else ""
