"""A real ACME server for the tests: Debian's `pebble` and `pebble-challtestsrv` on loopback.

pebble-challtestsrv answers every DNS name with 127.0.0.1; pebble's validation authority
connects to `http_port` (the rivetr proxy's HTTP port) for HTTP-01. Pebble's own HTTPS
certificate is made here with openssl; its issuing root (new on every start) comes from its
management interface.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers import run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pebble:
    def __init__(self, work: Path) -> None:
        if shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None:
            raise AssertionError(
                "pebble is needed: run scripts/ensure-tools (apt-get install pebble)"
            )
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.management_port = _free_port()
        self.dns_port = _free_port()
        self.dns_management_port = _free_port()
        self.ca_file = work / "pebble-https.crt"
        self._key = work / "pebble-https.key"
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(self._key),
                "-out",
                str(self.ca_file),
            ]
        )
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self, http_port: int) -> None:
        """Start both servers; pebble validates HTTP-01 on 127.0.0.1:http_port."""
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self.ca_file),
                "privateKey": str(self._key),
                "httpPort": http_port,
                "tlsPort": _free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.work / "pebble.json").write_text(json.dumps(config))
        log = open(self.work / "pebble.log", "ab")  # noqa: SIM115 - lives with the processes
        self._procs.append(
            subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                    "-dns01",
                    f"127.0.0.1:{self.dns_port}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-management",
                    f"127.0.0.1:{self.dns_management_port}",
                ],
                stdout=log,
                stderr=log,
            )
        )
        self._procs.append(
            subprocess.Popen(
                [
                    "pebble",
                    "-config",
                    str(self.work / "pebble.json"),
                    "-dnsserver",
                    f"127.0.0.1:{self.dns_port}",
                ],
                stdout=log,
                stderr=log,
                # Pebble rejects 5% of nonces on purpose; the acme library retries a bad
                # nonce once, so two in a row (1 in 400 requests) failed a test now and then.
                env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            )
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in self._procs):
                break
            try:
                self._get(self.directory)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(
            "pebble did not start: " + (self.work / "pebble.log").read_text(errors="replace")
        )

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            data: bytes = response.read()
            return data

    def root_pem(self) -> str:
        """The root pebble issues under (since this start)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0").decode()

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
