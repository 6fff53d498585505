"""A reference load balancer for bench/zero_downtime.py --replicas: the system's nginx
(one worker, like rivetr's default one proxy worker) spreading GET / over the same
published container ports rivetr's proxy uses, so the cost of spreading over several
containers can be told apart from the cost of the proxy doing it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from harness import BenchError, free_port, stop_process, wait_port

_CONFIG = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Balancer(NamedTuple):
    port: int
    pid: int  # nginx's master; its worker is its child


@contextlib.contextmanager
def nginx_balancer(workdir: Path, ports: Sequence[int]) -> Iterator[Balancer]:
    """nginx in front of 127.0.0.1:`ports` (least-connected, like rivetr's proxy); yields
    its port and PID. Stopped by PID on the way out."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        raise BenchError("the nginx reference needs nginx (apt-get install -y nginx)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    config = workdir / "nginx.conf"
    config.write_text(
        _CONFIG.format(dir=workdir, servers="        least_conn;\n" + servers, port=port)
    )
    proc = subprocess.Popen(
        [binary, "-c", str(config), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_port(port)
        except BenchError:
            log = (workdir / "error.log").read_text(errors="replace")[-400:]
            raise BenchError(f"the nginx reference did not start:\n{log}") from None
        yield Balancer(port, proc.pid)
    finally:
        stop_process(proc, signal.SIGQUIT)
