"""The nginx data plane's own promises: checked before applied, one app never breaks others."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.nginx_config import render
from rivetr_git.proxy.routes import Upstream
from tests.proxy_env import start_env


async def _get(env_base: str, host: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(env_base + "/", headers={"Host": host}) as r:
        return r.status


async def test_an_app_nginx_refuses_is_left_out_and_the_others_keep_serving() -> None:
    async with start_env(backend="nginx") as env:
        assert isinstance(env.proxy, NginxProxy)
        before = env.proxy.conf.read_text()
        # An upstream nginx cannot parse (a host with a space): only this app is dropped.
        await env.set_route(Upstream(app="broken", host="no such host", port=1, deployment_id=5))
        assert await _get(env.base, "web.localhost") == 200
        assert await _get(env.base, "broken.localhost") == 404
        applied = env.proxy.conf.read_text()
        assert "broken" not in applied and "server_name web.localhost" in applied
        assert applied == before  # the table without the broken app is the old one
        # A good change after that applies as usual.
        await env.set_route(
            Upstream(app="more", host="127.0.0.1", port=env.upstream_port, deployment_id=6)
        )
        assert await _get(env.base, "more.localhost") == 200
        assert await _get(env.base, "web.localhost") == 200


def test_rendered_config_routes_each_app_by_name(tmp_path: Path) -> None:
    up = Upstream(app="web", host="127.0.0.1", port=5001, deployment_id=3)
    crashed = Upstream(app="down", host="127.0.0.1", port=5002, deployment_id=4, crashed=True)
    text = render(
        {"web.example.com": up, "down.example.com": crashed},
        "example.com",
        "0.0.0.0:8080",
        ProxyConfig(max_body_size=1024),
        2,
        tmp_path,
        30,
    )
    assert "worker_processes 2;" in text
    assert "server_name web.example.com;" in text
    assert "server 127.0.0.1:5001 max_fails=0;" in text
    assert "proxy_pass http://rivetr_web_3;" in text
    assert "client_max_body_size 1024;" in text
    assert "return 503" in text and "5002" not in text  # a crashed app is not proxied
    assert "server_tokens off;" in text


def test_custom_domains_share_one_upstream_and_stopped_apps_answer_503(tmp_path: Path) -> None:
    up = Upstream(app="web", host="127.0.0.1", port=5001, deployment_id=3)
    stopped = Upstream(app="off", host="127.0.0.1", port=5003, deployment_id=7, stopped=True)
    text = render(
        {"web.example.com": up, "www.web.test": up, "off.example.com": stopped},
        "example.com",
        "0.0.0.0:8080",
        ProxyConfig(),
        1,
        tmp_path,
        30,
    )
    assert text.count("upstream rivetr_web_3 {") == 1
    assert "server_name www.web.test;" in text and "server_name web.example.com;" in text
    assert "stopped by its owner" in text and "5003" not in text


async def test_settings_nginx_cannot_apply_are_named_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ProxyConfig(max_headers=50, access_log_backups=2, upstream_connections=8)
    with caplog.at_level(logging.WARNING, logger="rivetr_git.proxy.nginx"):
        async with start_env(backend="nginx", config=config):
            pass
    [warning] = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert "proxy_max_headers" in warning and "access_log_backups" in warning
    assert "proxy_upstream_connections" in warning and "websocket_idle_timeout" not in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rivetr_git.proxy.nginx"):
        async with start_env(backend="nginx"):  # defaults: nothing to say
            pass
    assert not [r for r in caplog.records if "ignores" in r.getMessage()]
