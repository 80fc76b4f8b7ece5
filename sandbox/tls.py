"""Throwaway TLS material for sandboxed engines: a CA, a server and a client certificate.

Made with the `openssl` binary, so tests can start a dockerd with `--tlsverify` and connect to it
with the right CA (works) or with another CA (fails). Calling `make_tls_files` again in another
folder gives a second, unrelated CA.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess

__all__ = ["TlsFiles", "make_tls_files"]

_DAYS = "30"


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """Paths of one CA and the server and client key pairs it signed (PEM files)."""

    ca_cert: pathlib.Path
    ca_key: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path

    def dockerd_args(self) -> list[str]:
        """Arguments that make a dockerd require client certificates signed by this CA."""
        return [
            "--tlsverify",
            f"--tlscacert={self.ca_cert}",
            f"--tlscert={self.server_cert}",
            f"--tlskey={self.server_key}",
        ]

    def client_args(self) -> list[str]:
        """Arguments for the `docker` CLI to connect with the client certificate."""
        return [
            "--tlsverify",
            f"--tlscacert={self.ca_cert}",
            f"--tlscert={self.client_cert}",
            f"--tlskey={self.client_key}",
        ]


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    """Run one openssl command; raise RuntimeError with its output if it fails."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed (run scripts/install-deps.sh)")
    proc = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")


def _genkey(path: pathlib.Path, *, cwd: pathlib.Path) -> None:
    """An ECDSA P-256 key (PKCS#8 PEM): generated in milliseconds, unlike RSA."""
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
        cwd=cwd,
    )  # fmt: skip


def _signed_pair(
    directory: pathlib.Path, stem: str, subject: str, extensions: str
) -> tuple[pathlib.Path, pathlib.Path]:
    """Make `<stem>-key.pem` and `<stem>-cert.pem` signed by the CA in `directory`."""
    key, csr, cert = (directory / f"{stem}-{s}.pem" for s in ("key", "csr", "cert"))
    ext = directory / f"{stem}.ext"
    ext.write_text(extensions)
    _genkey(key, cwd=directory)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=directory)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-days", _DAYS, "-sha256", "-extfile", str(ext), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    os.chmod(key, 0o600)
    return cert, key


def make_tls_files(directory: str | os.PathLike[str]) -> TlsFiles:
    """Create a fresh CA plus server and client certificates in `directory` (created if needed).

    The server certificate is valid for IP 127.0.0.1 and DNS localhost; the client certificate
    carries extendedKeyUsage clientAuth. Raises RuntimeError if openssl is missing or fails.
    """
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _genkey(d / "ca-key.pem", cwd=d)
    _openssl(
        "req", "-new", "-x509", "-days", _DAYS, "-key", "ca-key.pem", "-sha256",
        "-subj", f"/CN=reconciler sandbox CA {d.name}", "-out", "ca-cert.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
    )  # fmt: skip
    os.chmod(d / "ca-key.pem", 0o600)
    server_cert, server_key = _signed_pair(
        d,
        "server",
        "/CN=localhost",
        "subjectAltName = IP:127.0.0.1,DNS:localhost\nextendedKeyUsage = serverAuth\n",
    )
    client_cert, client_key = _signed_pair(
        d, "client", "/CN=reconciler-client", "extendedKeyUsage = clientAuth\n"
    )
    return TlsFiles(
        ca_cert=d / "ca-cert.pem",
        ca_key=d / "ca-key.pem",
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
    )
