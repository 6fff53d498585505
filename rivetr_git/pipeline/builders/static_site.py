"""Build type *static*: a generated Dockerfile that serves the publish dir with nginx.

The image is the `static_server_image` setting (an nginx image laid out like the official
one: /etc/nginx/conf.d/*.conf included, CMD runs nginx) plus the site and one server block:
SPA fallback (unknown paths answer index.html), gzip, and a health endpoint. No ENV, ARG or
build-time value ever enters this build: env vars reach the container only at run time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rivetr_git.pipeline.builders.context import subtree

PORT = 80  # what the official image EXPOSEs: the image keeps a single port
HEALTH_PATH = "/.rivetr/health"

_CONF = """\
server {{
    listen {port};
    root /usr/share/nginx/html;
    index index.html;
    gzip on;
    gzip_vary on;
    gzip_min_length 256;
    gzip_types text/plain text/css text/xml application/javascript application/json
               application/xml image/svg+xml;
    location = {health} {{
        access_log off;
        default_type text/plain;
        return 200 "ok\\n";
    }}
    # SPA fallback: a path that is no file is the single-page app's to route.
    location / {{
        try_files $uri $uri/ /index.html;
    }}
}}
"""

_DOCKERFILE = """\
FROM {image}
COPY rivetr-static.conf /etc/nginx/conf.d/default.conf
COPY site/ /usr/share/nginx/html/
EXPOSE {port}
"""


def dockerfile(server_image: str) -> str:
    return _DOCKERFILE.format(image=server_image, port=PORT)


def server_config() -> str:
    return _CONF.format(port=PORT, health=HEALTH_PATH)


async def prepare(context_tar: Path, target: Path, publish_dir: str, server_image: str) -> int:
    """Write the static build's context to `target`: the generated Dockerfile, the nginx
    server block and the publish dir under site/. Returns how many site files it holds.
    Raises BuildFailed when the publish dir holds nothing."""
    extra = {
        "Dockerfile": dockerfile(server_image).encode(),
        "rivetr-static.conf": server_config().encode(),
    }
    return await asyncio.to_thread(subtree, context_tar, target, publish_dir, "site/", extra)
