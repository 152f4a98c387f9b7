"""Throwaway certificates for TLS tests (trustme): a CA, a server certificate it signed for
127.0.0.1 and localhost, and another CA that signed nothing the servers use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA the clients are told to trust
    cert: Path  # the server's certificate chain
    key: Path  # its private key
    other_ca: Path  # a CA that signed none of it


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    paths.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths.key))
    trustme.CA().cert_pem.write_to_path(str(paths.other_ca))
    return paths
