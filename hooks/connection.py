"""How every part of the hook reaches the engine: DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH read in one
place, by the docker SDK's own rules (docker.utils.kwargs_from_env, docker.utils.parse_host), for the SDK's client
(client()) and for the log streams that speak the engine's API themselves (endpoint(), hooks/follow.py).

The SDK's rules (docker 7.x, docker/utils/utils.py): TLS is on when DOCKER_TLS_VERIFY is set to anything but the
empty string (even "0") or DOCKER_CERT_PATH is set; the certificates are DOCKER_CERT_PATH's (else ~/.docker)
ca.pem, cert.pem and key.pem; the server's certificate is checked against ca.pem only when DOCKER_TLS_VERIFY is set
(DOCKER_CERT_PATH alone: TLS with the client's certificate, the server's unchecked). A tcp:// host must name its
port; with TLS it is spoken as https. No DOCKER_HOST: the local socket /var/run/docker.sock.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import docker
import requests.utils
from docker.constants import IS_WINDOWS_PLATFORM
from docker.errors import TLSParameterError
from docker.tls import TLSConfig
from docker.utils import kwargs_from_env, parse_host


class UnsupportedHost(ValueError):
    """DOCKER_HOST names a transport the log streams cannot speak (ssh://, npipe://); the text says why."""


def settings(environ: Mapping[str, str] | None = None) -> dict:
    """The SDK's client keyword arguments from environ (default os.environ): {"base_url": DOCKER_HOST} when it is
    set, {"tls": TLSConfig} when TLS is on. Raises docker.errors.TLSParameterError when a certificate file TLS
    needs is missing. An empty environ is read as os.environ, as the SDK does."""
    return kwargs_from_env(environment=environ)


def client(timeout: int, environ: Mapping[str, str] | None = None) -> docker.DockerClient:
    """A client of the engine the environment names, with timeout (seconds) on each API call (as docker.from_env).
    Raises docker.errors.DockerException for settings the SDK refuses."""
    return docker.DockerClient(timeout=timeout, **settings(environ))


@dataclass(frozen=True)
class Endpoint:
    """Where the log streams connect: the SDK's normalised base URL (url, e.g. http+unix:///var/run/docker.sock,
    https://127.0.0.1:2376); unix_path for a unix socket, else host and port over TCP, with tls the context for
    TLS (None: plain HTTP)."""

    url: str
    unix_path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: ssl.SSLContext | None = None


def endpoint(environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine's address as the SDK's client would reach it (docker/api/client.py APIClient.__init__: TLS needs
    a DOCKER_HOST; parse_host decides the scheme). Raises UnsupportedHost for ssh:// and npipe:// (the SDK speaks
    them through paramiko or a Windows pipe; the log loop speaks HTTP over a socket it opens itself), and
    docker.errors.DockerException (TLSParameterError among them) for settings the SDK refuses."""
    kwargs = settings(environ)
    tls: TLSConfig | None = kwargs.get("tls")
    if tls and not kwargs.get("base_url"):
        raise TLSParameterError("If using TLS, the base_url argument must be provided.")
    url = parse_host(kwargs.get("base_url"), IS_WINDOWS_PLATFORM, tls=bool(tls))
    scheme = url.split("://", 1)[0]
    if scheme == "http+unix":
        return Endpoint(url, unix_path=url[len("http+unix://"):])
    if scheme in ("http", "https"):
        where = urlsplit(url)
        return Endpoint(url, host=where.hostname, port=where.port,
                        tls=ssl_context(tls) if scheme == "https" else None)
    raise UnsupportedHost(
        f"DOCKER_HOST {url}: the hook's log streams connect to the engine by a unix socket or TCP (unix://, "
        f"tcp:// with or without TLS), not {scheme}://; run the hook on the engine's host, or reach the engine "
        f"over tcp:// with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH")


def ssl_context(tls: TLSConfig | None) -> ssl.SSLContext:
    """An SSLContext that checks what the SDK's client checks with tls (TLSConfig.configure_client hands requests
    `verify` and `cert`): the server's certificate against ca_cert when verify is set and ca_cert given, against
    the bundle requests uses (certifi) when verify is True alone, not at all when verify is false; the client's
    certificate and key when given. None (an https:// DOCKER_HOST without the TLS variables): requests' default,
    the server checked against that bundle."""
    verify: bool | str = True
    if tls is not None:
        verify = tls.ca_cert if tls.verify and tls.ca_cert else tls.verify or False
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        context = ssl.create_default_context(cafile=requests.utils.DEFAULT_CA_BUNDLE_PATH)
    elif os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(cafile=verify)
    if tls is not None and tls.cert:
        context.load_cert_chain(*tls.cert)
    return context
