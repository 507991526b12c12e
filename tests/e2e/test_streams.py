"""A daemon probing the simulated platform's gRPC health service and notification stream,
scraped over HTTP: the grpc and websocket series appear with blackbox_exporter's names,
and the stream's token (a secret, or an environment value) never shows in /metrics,
/api/status, logs or `prober probe`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from prober.config.load import load_config
from prober.engine.daemon import Daemon
from prober.probes.net.grpc_wire import HEALTH_CHECK_PATH
from prober.sim import DEMO_PASSWORD, DEMO_USER, SimOptions, start_sim
from prober.sim.grpc import BytesCodec
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.processes import spawn_prober, wait_for
from tests.support.samples import parse_samples
from tests.support.servers import serve_app

FAST = SimOptions(latency_ms=0, latency_jitter_ms=0, seed=11)
CONFIG = """
interval: 1s
timeout: 0.8s
secrets:
  stream_token: {env: PROBER_TEST_UNSET_TOKEN, default: TOKEN}
checks:
  - name: grpc-login
    kind: grpc
    component: login
    target: GRPC
    service: login
  - name: stream
    kind: websocket
    component: notifications
    url: STREAM
    headers:
      Authorization: "Bearer ${stream_token}"
    expect: '"type":\\s*"hello"'
    within: 0.5s
"""


async def test_daemon_exports_grpc_and_websocket_series(tmp_path: Path) -> None:
    sim = await start_sim(options=FAST, grpc_listen=("127.0.0.1", 0))
    assert sim.grpc is not None
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{sim.url}/api/v1/login", json={"username": DEMO_USER, "password": DEMO_PASSWORD}
        ) as reply,
    ):
        token = str((await reply.json())["access_token"])
    stream = sim.url.replace("http://", "ws://") + "/api/v1/notifications/stream"
    config = tmp_path / "prober.yml"
    text = CONFIG.replace("GRPC", sim.grpc.address).replace("STREAM", stream)
    config.write_text(text.replace("TOKEN", token))
    daemon = Daemon(config)
    await daemon.start()
    server = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as client:

            async def scrape() -> dict[tuple[str, str], float]:
                async with client.get(f"{base}/metrics") as resp:
                    text = await resp.text()
                assert token not in text
                return {
                    (name, dict(labels)["check"]): value
                    for name, labels, value in parse_samples(text)
                    if "check" in dict(labels) and "phase" not in dict(labels)
                }

            async def both_ran() -> bool:
                samples = await scrape()
                return ("probe_grpc_status_code", "grpc-login") in samples and (
                    "probe_websocket_status_code",
                    "stream",
                ) in samples

            await wait_for(both_ran, limit=30)
            samples = await scrape()
            assert samples[("probe_success", "grpc-login")] == 1
            assert samples[("probe_grpc_status_code", "grpc-login")] == 0
            assert samples[("probe_success", "stream")] == 1
            assert samples[("probe_websocket_status_code", "stream")] == 101
            async with client.get(f"{base}/api/status") as resp:
                assert token not in await resp.text()
    finally:
        await server.cleanup()
        await daemon.stop()
        await sim.stop()


class EchoingHealth:
    """A gRPC health service that refuses every call, quoting its `authorization` metadata in
    the status message (as a careless server does): the probe's message carries it back."""

    def __mapping__(self) -> dict[str, Handler]:
        return {HEALTH_CHECK_PATH: Handler(self.check, Cardinality.UNARY_UNARY, bytes, bytes)}

    async def check(self, stream: Stream[bytes, bytes]) -> None:
        await stream.recv_message()
        sent = stream.metadata.get("authorization") if stream.metadata is not None else None
        raise GRPCError(Status.UNAUTHENTICATED, f"refused {sent!s}")


async def echoing_stream(request: web.Request) -> web.WebSocketResponse:
    """A WebSocket that sends the Authorization header back and closes."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(f"you sent {request.headers.get('Authorization')}")
    await ws.close(message=str(request.headers.get("Authorization")).encode()[:100])
    return ws


ENV_CONFIG = """
interval: 1s
timeout: 0.8s
checks:
  - name: grpc-env
    kind: grpc
    component: api
    target: TARGET_AT
    metadata:
      authorization: "Bearer ${GRPC_TOKEN}"
  - name: stream-env
    kind: websocket
    component: notifications
    url: STREAM
    headers:
      Authorization: "Bearer ${WS_TOKEN}"
    expect: "^never$"
"""


async def test_env_values_in_websocket_headers_and_grpc_metadata_are_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${ENV}` in a websocket check's headers or a grpc check's metadata is as secret as in
    an http check's headers: in no status, log line, message or `prober probe` output."""
    grpc_token, ws_token = "env-grpc-T0ken-5d2e", "env-ws-T0ken-8a1f"
    caplog.set_level(logging.DEBUG)
    server = Server([EchoingHealth()], codec=BytesCodec())
    await server.start("127.0.0.1", 0)
    grpc_port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    app = web.Application()
    app.router.add_get("/ws", echoing_stream)
    runner, base = await serve_app(app)
    config = tmp_path / "prober.yml"
    text = ENV_CONFIG.replace("TARGET_AT", f"127.0.0.1:{grpc_port}")
    config.write_text(text.replace("STREAM", base.replace("http://", "ws://") + "/ws"))
    monkeypatch.setenv("GRPC_TOKEN", grpc_token)
    monkeypatch.setenv("WS_TOKEN", ws_token)
    assert {grpc_token, ws_token} <= load_config(config).sensitive_values
    daemon = Daemon(config)
    await daemon.start()
    web_server = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
    outputs: list[str] = []
    try:
        await wait_for(lambda: all(s.success is False for s in daemon.status.states()), limit=20)
        async with aiohttp.ClientSession() as client:
            for path in ("/metrics", "/api/status", "/status"):
                async with client.get(f"http://127.0.0.1:{web_server.port}{path}") as resp:
                    outputs.append(await resp.text())
        env = {"PATH": "/usr/bin:/bin", "GRPC_TOKEN": grpc_token, "WS_TOKEN": ws_token}
        for check in ("grpc-env", "stream-env"):
            process = await spawn_prober(
                "probe", "--config.file", str(config), check, "--metrics", env=env
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=60)
            assert process.returncode == 1, out.decode() + err.decode()
            outputs += [out.decode(), err.decode()]
    finally:
        await web_server.cleanup()
        await daemon.stop()
        await runner.cleanup()
        server.close()
        await server.wait_closed()
    outputs.append(caplog.text)
    everything = "\n".join(outputs)
    assert "refused Bearer ***" in everything  # the server's message came back, redacted
    assert grpc_token not in everything
    assert ws_token not in everything
