"""Throw-away certificates for TLS tests: a CA, a server and a client certificate, and a
second, unknown CA with its own client certificate (for the failures).

EC P-256 keys, so making them all takes milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Issuer = Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: `ca` signed the server and client pairs; `other_ca` signed `other_client`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _name(common_name: str) -> x509.Name:
    """A subject with this CN; none for an empty one (see `make_tls`)."""
    if not common_name:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Optional[Issuer],
    hosts: Sequence[str] = (),
    usages: Sequence[x509.ObjectIdentifier] = (),
) -> x509.Certificate:
    """A certificate for `key`, self-signed when `issuer` is None (a CA)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    signer_cert, signer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(signer_cert.subject if signer_cert is not None else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(host)) for host in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _write(directory: Path, stem: str, cert: x509.Certificate, key=None) -> Tuple[Path, Path]:
    cert_path = directory / f"{stem}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / f"{stem}-key.pem"
    if key is not None:
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
    return cert_path, key_path


def _pair(
    directory: Path,
    stem: str,
    issuer: Issuer,
    hosts: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
) -> Tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = stem if hosts else ""
    return _write(directory, stem, _certificate(common_name, key, issuer, hosts, usages), key)


def _ca(common_name: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    return _certificate(common_name, key, None), key


def make_tls(directory: Path, hosts: Sequence[str]) -> TLSFiles:
    """Write a fresh set of files to `directory`; the server certificate names `hosts` (IPs).

    The client certificates have no common name: with authentication on, etcd's v3
    gateway refuses a client certificate that has one (it would not be the user).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = _ca("yt test CA"), _ca("yt unknown CA")
    client_only = [ExtendedKeyUsageOID.CLIENT_AUTH]
    # etcd's v3 JSON gateway connects to its own gRPC server with the server certificate
    # as a client certificate, so that one needs both usages.
    both = [ExtendedKeyUsageOID.SERVER_AUTH, *client_only]
    server = _pair(directory, "server", ca, hosts, both)
    client = _pair(directory, "client", ca, (), client_only)
    other = _pair(directory, "other-client", other_ca, (), client_only)
    return TLSFiles(
        ca=_write(directory, "ca", ca[0])[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca=_write(directory, "other-ca", other_ca[0])[0],
        other_client_cert=other[0],
        other_client_key=other[1],
    )
