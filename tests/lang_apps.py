"""Language apps for the built-in builder's tests and benchmark. Builds have no network
here, so none downloads anything: the Python, Node and Go apps use only their standard
libraries, and the wheel app vendors its one dependency (a wheel made here, installed with
`--no-index --find-links vendor/`)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from tests.helpers import AppRepo, Key

PYTHON_APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

GREETING = "{greeting}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{{GREETING}} uid={{os.getuid()}}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

NODE_SERVER = """\
const fs = require("fs");
const http = require("http");
const built = fs.readFileSync("built.txt", "utf8").trim();
http.createServer((req, res) => {{
  res.end(`{greeting} ${{built}} uid=${{process.getuid()}}\\n`);
}}).listen(Number(process.env.PORT), "0.0.0.0");
"""

# The build sees build-time env (it must not write a value into the image: the server checks).
NODE_BUILD = """\
const seen = process.env.GREETING ? "a build-time GREETING" : "no build-time GREETING";
require("fs").writeFileSync("built.txt", `built with ${seen}`);
"""

NODE_PACKAGE = """\
{"name": "lb-node", "version": "1.0.0", "private": true,
 "scripts": {"build": "node build.js", "start": "node server.js"}}
"""

NODE_LOCK = """\
{"name": "lb-node", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
 "packages": {"": {"name": "lb-node", "version": "1.0.0"}}}
"""

GO_MAIN = """\
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {{
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {{
		fmt.Fprintf(w, "{greeting} uid=%d\\n", os.Getuid())
	}})
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), nil); err != nil {{
		panic(err)
	}}
}}
"""

SITE_PACKAGE = '{"name": "lb-site", "private": true, "scripts": {"build": "node build.js"}}\n'
SITE_BUILD = """\
const fs = require("fs");
fs.mkdirSync("dist", {{ recursive: true }});
fs.writeFileSync("dist/index.html", "<h1>{greeting}</h1>\\n");
"""


class SourceRepo(AppRepo):
    """A git checkout holding exactly `files` (no busybox, no Dockerfile)."""

    def __init__(self, path: Path, key: Key, files: dict[str, str | bytes]) -> None:
        self.path = path
        self.key = key
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.put(files)
        self.commit("first")

    def put(self, files: dict[str, str | bytes]) -> None:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)


def python_files(greeting: str = "hello from python") -> dict[str, str | bytes]:
    return {"requirements.txt": "", "app.py": PYTHON_APP.format(greeting=greeting)}


def wheel_files() -> dict[str, str | bytes]:
    """An app importing `greeting` from a vendored wheel, installed without an index."""
    app = PYTHON_APP.format(greeting="X").replace(
        'GREETING = "X"', "from greeting import hello\n\nGREETING = hello()"
    )
    return {
        "requirements.txt": "--no-index\n--find-links ./vendor\ngreeting==1.0\n",
        "vendor/greeting-1.0-py3-none-any.whl": wheel(
            "greeting", "1.0", {"greeting.py": 'def hello():\n    return "hello from a wheel"\n'}
        ),
        "app.py": app,
    }


def node_files(greeting: str = "hello from node") -> dict[str, str | bytes]:
    return {
        "package.json": NODE_PACKAGE,
        "package-lock.json": NODE_LOCK,
        "build.js": NODE_BUILD,
        "server.js": NODE_SERVER.format(greeting=greeting),
    }


def go_files(greeting: str = "hello from go") -> dict[str, str | bytes]:
    return {
        "go.mod": "module example.com/lbgo\n\ngo 1.19\n",
        "main.go": GO_MAIN.format(greeting=greeting),
    }


def site_files(greeting: str = "hello from a built site") -> dict[str, str | bytes]:
    return {"package.json": SITE_PACKAGE, "build.js": SITE_BUILD.format(greeting=greeting)}


def wheel(name: str, version: str, modules: dict[str, str]) -> bytes:
    """A pure-Python wheel, made by hand (building one with pip would need the network)."""
    info = f"{name}-{version}.dist-info"
    files = {
        **{path: text.encode() for path, text in modules.items()},
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: rivetr-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={_digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def cached(output: str, step: str) -> bool:
    """Whether the build step whose line contains `step` reused its layer (Docker's legacy
    builder: ' ---> Using cache'; Podman: '--> Using cache ...')."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if step in line and ("Step " in line or "STEP " in line):
            return i + 1 < len(lines) and "Using cache" in lines[i + 1]
    raise AssertionError(f"no build step {step!r} in:\n{output}")
