"""Certificates for an engine reached over TCP with TLS, made by the openssl CLI: a CA, a server certificate for
127.0.0.1 and a client certificate, laid out as Docker expects (docs.docker.com/engine/security/protect-access:
the client's DOCKER_CERT_PATH holds ca.pem, cert.pem and key.pem; dockerd is given --tlscacert, --tlscert,
--tlskey)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    """The files in dir: ca.pem (the CA), cert.pem and key.pem (the client's), server-cert.pem and server-key.pem
    (the engine's, for IP 127.0.0.1)."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server-cert.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server-key.pem"

    def dockerd_args(self) -> tuple[str, ...]:
        """dockerd's flags that make it speak TLS and ask every client for a certificate this CA signed."""
        return ("--tlsverify", "--tlscacert", str(self.ca), "--tlscert", str(self.server_cert),
                "--tlskey", str(self.server_key))


def _openssl(*args: str, stdin: bytes | None = None) -> None:
    subprocess.run(["openssl", *args], input=stdin, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path, days: int = 2) -> Certs:
    """A CA and the certificates it signs, in directory (made if missing): P-256 keys, valid for `days` days."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", "-new", *key, "-keyout", str(d / "ca-key.pem"), "-out", str(d / "ca.pem"),
             "-days", str(days), "-subj", "/CN=ownvol test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, key_file, cert_file, ext in (
            ("127.0.0.1", "server-key.pem", "server-cert.pem",
             "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("ownvol test client", "key.pem", "cert.pem", "extendedKeyUsage=clientAuth\n")):
        (d / "ext.cnf").write_text(f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n{ext}")
        _openssl("req", "-new", *key, "-keyout", str(d / key_file), "-out", str(d / "req.csr"),
                 "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(d / "req.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca-key.pem"),
                 "-CAcreateserial", "-days", str(days), "-extfile", str(d / "ext.cnf"), "-out", str(d / cert_file))
    for leftover in ("ext.cnf", "req.csr", "ca.srl"):
        (d / leftover).unlink(missing_ok=True)
    return Certs(d)
