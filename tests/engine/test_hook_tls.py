"""The hook on an engine reached over TCP with TLS on 127.0.0.1 (a private dockerd with --tlsverify and certificates
made here): with --log-files off, a Redis's start-up failure is read through the hook's log stream, which
connects where the docker SDK's client does (hooks/connection.py), and healed; the streams' HTTP reads that
engine's multiplexed and raw TTY logs over TLS, and a client without TLS is refused by it."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ownvol.hook.connection import Endpoint, endpoint
from ownvol.hook.follow import EngineError, LogStreams
from tests.support.common import free_port, new_name
from tests.support.engine import redis_cmd, wait_for
from tests.support.fixtures_hook import fast_strategies
from tests.support.tls import Certs, make_certs

pytestmark = pytest.mark.engine


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


@pytest.fixture
def certs() -> Iterator[Certs]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, removed after the test."""
    directory = Path(tempfile.mkdtemp(prefix="ovt-certs-"))
    try:
        yield make_certs(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def first_line(streams: LogStreams, container_id: str, since_ns: int, needle: str, tty: bool = False) -> str:
    """The first line of the container's log from since_ns holding needle, read through the streams (30 s at most)."""
    async def read() -> str:
        async for line in streams.lines(container_id, since_ns, tty):
            if needle in line:
                return line
        raise AssertionError(f"the log of {container_id[:12]} ended without {needle!r}")

    return asyncio.run(asyncio.wait_for(read(), 30))


def test_a_start_up_failure_on_an_engine_reached_over_tls_is_read_through_the_stream_and_healed(
        certs, hook, private_engine, redis_image, host_dir, port, tmp_path):
    engine = private_engine
    env = engine.serve_tls(certs, free_port())
    engine.extra_args.append("--debug")  # dockerd logs each API call it serves ("Calling GET /..." up to 26.1;
    # 28.5: msg="handling GET request" ... request-url=/...)
    client = engine.start()
    engine.load_image(redis_image)
    # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, where set (this machine sets them), replace the CA the
    # SDK's client is given (requests/sessions.py merge_environment_settings): blank, the engine's ca.pem is used
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--log-files", "off"),
             env={**env, "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""})
    started = time.time()
    c = client.containers.run(redis_image, redis_cmd(port, data_dir="/bound"), detach=True, user="999:999",
                              network_mode="host", volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}},
                              labels=h.labels, restart_policy={"Name": "on-failure"}, name=new_name())
    source = h.wait_event(lambda e: e["event"] == "logs" and "container" not in e, 30, "the hook's log source")
    assert source["source"] == "the engine's logs endpoint" and "--log-files off" in source["why"], source
    assert h.wait_event(by(c.name, "watching"), 30, "the canary watched")["logs"].startswith("engine ")
    detected = h.wait_event(by(c.name, "detected"), 60, "the start-up failure read through the stream")
    assert "Permission denied" in detected["message"], detected
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the canary healed")
    assert recovered["ts"] >= started
    assert wait_for(lambda: redis.Redis(host="127.0.0.1", port=port, socket_timeout=3).ping(), 30, what="PONG")
    # the hook's streams never failed on that engine (a TLS refusal would be a follower-restarted or -stopped event)
    assert not h.of("follower-restarted", c.name) and not h.of("follower-stopped", c.name), h.events[-20:]
    # the hook reaches the engine by TCP alone (DOCKER_HOST): every request dockerd served on its logs endpoint
    # without an API version in the path is a log stream of hooks/follow.py (the SDK's paths carry one)
    served = Path(engine.log_path).read_text(errors="replace")
    streams = re.findall(rf"(?:Calling GET |handling GET request.* request-url=\"?)/containers/{c.id}/logs", served)
    assert streams, "no log stream asked of the engine"

    # the same streams, run here with the hook's settings: the failure in the multiplexed frames, a TTY's raw
    # output, and a client without TLS turned away by the engine
    tls_streams = LogStreams(endpoint(env))
    line = first_line(tls_streams, c.id, int(started - 2) * 1_000_000_000, "Permission denied")
    assert re.match(r"\d{4}-\d\d-\d\dT\S+Z .*Permission denied", line), line
    tty = client.containers.run(redis_image, ["sh", "-c", "echo on a tty"], tty=True, detach=True,
                                network_mode="none", name=new_name())
    tty.wait(timeout=30)
    assert first_line(tls_streams, tty.id, 0, "on a tty", tty=True).endswith(" on a tty\r")
    # the SDK's other readings of the variables, on the same engine: "0" still verifies; DOCKER_CERT_PATH alone
    # shows the client's certificate and checks not the engine's
    for variant in ({**env, "DOCKER_TLS_VERIFY": "0"}, {k: v for k, v in env.items() if k != "DOCKER_TLS_VERIFY"}):
        assert asyncio.run(LogStreams(endpoint(variant)).running(c.id)), variant
    where = tls_streams.endpoint()
    plain = LogStreams(Endpoint(where.url.replace("https", "http"), host=where.host, port=where.port))
    with pytest.raises(EngineError, match="HTTPS"):
        asyncio.run(plain.inspect(c.id))
