"""How the hook reaches the engine (hooks/connection.py) for the environments the docker SDK reads, each set against
what the SDK's own client makes of it; and the log streams' HTTP/1.1 (hooks/follow.py, h11) against a local
server answering as dockerd does: chunked multiplexed frames, a TTY's raw stream until the connection ends, a
sized JSON answer, a stream cut mid-chunk, a connection closed before any answer."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import docker
import pytest

from ownvol.hook import connection
from ownvol.hook.connection import Endpoint, UnsupportedHost, endpoint
from ownvol.hook.follow import EngineError, LogStreams
from tests.support.tls import Certs, make_certs

BASE = {"PATH": "/usr/bin"}  # never empty: the SDK reads an empty environment as os.environ


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def sdk_client(env: dict[str, str]) -> docker.APIClient:
    """The SDK's own client for env, made without asking the engine anything (an explicit API version)."""
    return docker.APIClient(version="1.41", **connection.settings(env))


def test_no_docker_host_is_the_local_socket() -> None:
    assert endpoint(BASE) == Endpoint("http+unix:///var/run/docker.sock", unix_path="/var/run/docker.sock")
    assert endpoint({**BASE, "DOCKER_HOST": "unix:///run/other.sock"}).unix_path == "/run/other.sock"


def test_tcp_without_the_tls_variables_is_plain_http() -> None:
    env = {**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2375"}
    where = endpoint(env)
    assert (where.host, where.port, where.tls) == ("127.0.0.1", 2375, None)
    assert sdk_client(env).base_url == where.url == "http://127.0.0.1:2375"
    # the empty string counts as unset for both variables
    assert endpoint({**env, "DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""}).tls is None


def test_tls_verify_checks_the_engine_against_the_ca_and_shows_the_client_certificate(certs: Certs) -> None:
    env = {**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs.dir)}
    where = endpoint(env)
    assert where.url == sdk_client(env).base_url == "https://127.0.0.1:2376" and (where.host, where.port) == (
        "127.0.0.1", 2376)
    assert where.tls is not None and where.tls.verify_mode == ssl.CERT_REQUIRED and where.tls.check_hostname
    assert [c["subject"] for c in where.tls.get_ca_certs()] == [((("commonName", "ownvol test CA"),),)]
    api = sdk_client(env)
    assert api.verify == str(certs.ca) and api.cert == (str(certs.dir / "cert.pem"), str(certs.dir / "key.pem"))


def test_tls_verify_0_is_tls_with_verification_as_the_sdk_reads_it(certs: Certs) -> None:
    """docker/utils/utils.py kwargs_from_env: any value but the empty string turns verification on, "0" too (the
    hook's streams read "0" as off before, and spoke plain HTTP to an engine the SDK reached over TLS)."""
    env = {**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "0", "DOCKER_CERT_PATH": str(certs.dir)}
    where = endpoint(env)
    assert where.url == sdk_client(env).base_url == "https://127.0.0.1:2376"
    assert where.tls is not None and where.tls.verify_mode == ssl.CERT_REQUIRED
    assert sdk_client(env).verify == str(certs.ca)


def test_cert_path_alone_is_tls_without_checking_the_engine(certs: Certs) -> None:
    env = {**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_CERT_PATH": str(certs.dir)}
    where = endpoint(env)
    assert where.url == sdk_client(env).base_url == "https://127.0.0.1:2376"
    assert where.tls is not None and where.tls.verify_mode == ssl.CERT_NONE and not where.tls.check_hostname
    assert sdk_client(env).verify is False


def test_tls_verify_without_cert_path_reads_the_home_docker_dir(certs: Certs, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".docker").symlink_to(certs.dir)
    monkeypatch.setenv("HOME", str(tmp_path))
    where = endpoint({**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1"})
    assert where.tls is not None and where.tls.verify_mode == ssl.CERT_REQUIRED


def test_an_https_host_without_the_tls_variables_checks_the_engine_against_the_default_bundle() -> None:
    where = endpoint({**BASE, "DOCKER_HOST": "https://127.0.0.1:2376"})
    assert (where.url, where.port) == ("https://127.0.0.1:2376", 2376)
    assert where.tls is not None and where.tls.verify_mode == ssl.CERT_REQUIRED and where.tls.get_ca_certs()


@pytest.mark.parametrize("host", ["ssh://user@engine.example", "ssh://engine.example:2222",
                                  "npipe:////./pipe/docker_engine"])
def test_hosts_the_streams_cannot_speak_are_refused_with_the_reason(host: str) -> None:
    with pytest.raises(UnsupportedHost, match="unix socket or TCP"):
        endpoint({**BASE, "DOCKER_HOST": host})


def test_settings_the_sdk_refuses_are_refused_alike(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(docker.errors.DockerException, match="port is required"):
        endpoint({**BASE, "DOCKER_HOST": "tcp://127.0.0.1"})  # no 2375/2376 guessed: the SDK guesses none
    with pytest.raises(docker.errors.TLSParameterError, match="base_url"):
        endpoint({**BASE, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs.dir)})  # TLS to the socket
    with pytest.raises(docker.errors.TLSParameterError):
        endpoint({**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_CERT_PATH": str(tmp_path)})  # no files


def test_the_streams_read_the_settings_once_and_report_a_refusal_as_an_engine_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ssh://engine.example")
    streams = LogStreams()
    with pytest.raises(EngineError, match="unix socket or TCP"):
        streams.endpoint()
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    assert LogStreams().endpoint().url == "http://127.0.0.1:2375"


# --- the streams' HTTP over a unix socket ---------------------------------------------------------------------------

def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def chunked(body: bytes, size: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n"


def served(answers: list[bytes], check: Callable[[LogStreams], Awaitable[None]], tmp_path: Path) -> list[bytes]:
    """Run check against a unix socket that answers each connection with the next of answers (then closes it);
    the requests it read."""
    requests: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    async def main() -> None:
        sock = str(tmp_path / "engine.sock")
        server = await asyncio.start_unix_server(answer, sock)
        async with server:
            await check(LogStreams(Endpoint(f"http+unix://{sock}", unix_path=sock)))

    asyncio.run(main())
    return requests


async def collect(streams: LogStreams, tty: bool = False) -> list[str]:
    return [line async for line in streams.lines("c1", 1_796_000_000_000_000_007, tty)]


def test_a_chunked_stream_of_frames_is_read_whatever_the_chunks_cut(tmp_path: Path) -> None:
    body = frame(1, b"2026-11-30T01:00:00.000000001Z out\n2026-11-30T01:00:00.0") + \
        frame(2, "00000002Z err \u00e9\n".encode()) + frame(2, b"2026-11-30T01:00:00.000000003Z last")
    got: list[list[str]] = []

    async def check(streams: LogStreams) -> None:
        for _ in range(3):
            got.append(await collect(streams))

    requests = served([STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, size)
                       for size in (1, 7, len(body))], check, tmp_path)
    assert got == [["2026-11-30T01:00:00.000000001Z out", "2026-11-30T01:00:00.000000002Z err \u00e9",
                    "2026-11-30T01:00:00.000000003Z last"]] * 3
    assert requests[0] == (b"GET /containers/c1/logs?follow=1&stdout=1&stderr=1&timestamps=1"
                           b"&since=1796000000.000000007 HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")


def test_a_tty_stream_is_its_raw_output_until_the_connection_ends(tmp_path: Path) -> None:
    got: list[str] = []

    async def check(streams: LogStreams) -> None:
        got.extend(await collect(streams, tty=True))

    served([STREAM_HEAD + b"\r\n2026-11-30T01:00:00.000000001Z \x01\x00 raw\r\n2026-11-30T01:00:00.000000002Z x"],
           check, tmp_path)
    assert got == ["2026-11-30T01:00:00.000000001Z \x01\x00 raw\r", "2026-11-30T01:00:00.000000002Z x"]


def test_a_stream_cut_mid_chunk_or_before_its_answer_is_an_engine_error(tmp_path: Path) -> None:
    errors: list[str] = []

    async def check(streams: LogStreams) -> None:
        for _ in range(3):
            with pytest.raises(EngineError) as caught:
                await collect(streams)
            errors.append(str(caught.value))

    cut = chunked(frame(1, b"2026-11-30T01:00:00.000000001Z out\n"), 5)[:30]
    served([STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + cut, b"",
            b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 29\r\n\r\n'
            b'{"message":"No such c1 here"}'], check, tmp_path)
    assert "incomplete chunked read" in errors[0], errors
    assert errors[1] == "Connection closed by the engine before its response"
    assert errors[2].startswith("engine: 404 "), errors


def test_inspect_reads_a_sized_json_answer(tmp_path: Path) -> None:
    seen: list[object] = []

    async def check(streams: LogStreams) -> None:
        seen.append(await streams.running("c1"))
        seen.append(await streams.inspect("c2"))
        with pytest.raises(EngineError, match="engine: 500 'boom'"):
            await streams.inspect("c3")
        with pytest.raises(EngineError, match="broken HTTP exchange"):
            await streams.inspect("c4")

    def json_answer(status: str, body: bytes) -> bytes:
        return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                .encode() + body)

    requests = served([json_answer("200 OK", b'{"State": {"Running": true}}'),
                       json_answer("404 Not Found", b'{"message": "No such container: c2"}'),
                       json_answer("500 Internal Server Error", b'{"message": "boom"}'),
                       b"not HTTP at all\r\n\r\n"], check, tmp_path)
    assert seen == [True, None]
    assert requests[0].startswith(b"GET /containers/c1/json HTTP/1.1\r\n")


def test_the_engine_client_is_made_from_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict] = []
    monkeypatch.setattr(docker, "DockerClient", lambda **kwargs: made.append(kwargs))
    connection.client(timeout=15, environ={**BASE, "DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert made == [{"timeout": 15, "base_url": "tcp://127.0.0.1:2375"}]
    assert os.environ.get("DOCKER_HOST") != "tcp://127.0.0.1:2375"


@pytest.mark.parametrize("env, says", [({"DOCKER_HOST": "ssh://engine.example"}, "unix socket or TCP"),
                                       ({"DOCKER_HOST": "tcp://127.0.0.1"}, "port is required")])
def test_ownvol_watch_refuses_at_start_an_engine_it_cannot_stream_from(env: dict[str, str], says: str,
                                                                        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ownvol.hook.commands import watch

    result = CliRunner().invoke(watch, ["--state-dir", str(tmp_path), "--metrics-addr", "off"],
                                env={**env, "DOCKER_TLS_VERIFY": None, "DOCKER_CERT_PATH": None})
    assert result.exit_code == 1 and "cannot reach the engine as configured" in result.output, result.output
    assert says in result.output and not (tmp_path / "journal.sqlite").exists()
