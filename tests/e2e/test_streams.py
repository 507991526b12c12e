"""A daemon probing the simulated platform's gRPC health service and notification stream,
scraped over HTTP: the grpc and websocket series appear with blackbox_exporter's names,
and the stream's token (a secret) never shows in /metrics or /api/status."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from prober.engine.daemon import Daemon
from prober.sim import DEMO_PASSWORD, DEMO_USER, SimOptions, start_sim
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.processes import wait_for
from tests.support.samples import parse_samples

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
