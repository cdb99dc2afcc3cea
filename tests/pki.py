"""Certificates for TLS tests, made with trustme and written as PEM files (Dynamo's form)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme

from trioplane import TcpTls


@dataclass(frozen=True)
class Pki:
    """A CA and what it signed, as files; ``other_ca`` signed nothing here."""

    ca: str
    other_ca: str
    #: For 127.0.0.1 and localhost (an IP SAN, as Dynamo's rustls checks).
    server_cert: str
    server_key: str
    #: A client identity (for mTLS).
    client_cert: str
    client_key: str
    #: A client identity with no common name (etcd's gateway refuses one with a CN
    #: when auth is on).
    anonymous_cert: str
    anonymous_key: str
    #: Signed by ``ca`` for another name only.
    wrong_name_cert: str
    wrong_name_key: str
    #: Signed by ``ca`` for 127.0.0.1, expired yesterday.
    expired_cert: str
    expired_key: str

    def server(self, *, mtls: bool = False, dial: bool = True) -> TcpTls:
        """A worker's settings: serve TLS (mTLS: require client certs); ``dial``: call
        home over TLS with the CA and, with ``mtls``, a client identity."""
        return TcpTls(
            cert_path=self.server_cert,
            key_path=self.server_key,
            client_ca_path=self.ca if mtls else None,
            ca_path=self.ca if dial else None,
            client_cert_path=self.client_cert if mtls and dial else None,
            client_key_path=self.client_key if mtls and dial else None,
        )

    def env(self, tls: TcpTls) -> dict[str, str]:
        """The ``DYN_TCP_TLS_*`` variables that say ``tls`` to a Dynamo process."""
        from trioplane.tls import ENV

        values = {
            ENV[name]: str(getattr(tls, name))
            for name in (
                "cert_path",
                "key_path",
                "client_ca_path",
                "ca_path",
                "client_cert_path",
                "client_key_path",
                "server_name",
            )
            if getattr(tls, name) is not None
        }
        if tls.insecure:
            values[ENV["insecure"]] = "true"
        return values


def make_pki(folder: Path) -> Pki:
    ca, other = trustme.CA(), trustme.CA()
    paths: dict[str, str] = {}

    def write(name: str, blob: trustme.Blob) -> None:
        path = folder / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)

    write("ca", ca.cert_pem)
    write("other_ca", other.cert_pem)
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    leaves = {
        "server": ca.issue_cert("127.0.0.1", "localhost"),
        "client": ca.issue_cert("client.example", common_name="client"),
        "anonymous": ca.issue_cert("anonymous.example"),
        "wrong_name": ca.issue_cert("other.example"),
        "expired": ca.issue_cert(
            "127.0.0.1", not_before=yesterday - datetime.timedelta(days=1), not_after=yesterday
        ),
    }
    for name, leaf in leaves.items():
        write(f"{name}_cert", leaf.cert_chain_pems[0])
        write(f"{name}_key", leaf.private_key_pem)
    return Pki(**paths)
