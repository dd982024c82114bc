"""`sim.deploy.certificates`: the CA and server certificate of `python -m sim.deploy --tls`, checked
with a real TLS handshake on loopback (Python's `ssl`, no Flower)."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest

from sim.deploy.certificates import make_certificates


def _handshake(files, trusted_ca, server_name: str) -> None:
    """One TLS handshake with a server using `files`, from a client trusting `trusted_ca` only."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.certificate, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(trusted_ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(b"x")
    finally:
        thread.join(timeout=10)
        listener.close()


@pytest.mark.parametrize("server_name", ["127.0.0.1", "localhost"])
def test_the_server_certificate_is_trusted_through_the_ca_for_loopback(tmp_path, server_name):
    files = make_certificates(tmp_path / "tls")
    _handshake(files, files.ca, server_name)  # raises if the chain or the name does not verify
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600  # the private key: owner only


def test_another_deployments_ca_or_another_name_is_refused(tmp_path):
    files, other = make_certificates(tmp_path / "one"), make_certificates(tmp_path / "two")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, other.ca, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files, files.ca, "example.org")
