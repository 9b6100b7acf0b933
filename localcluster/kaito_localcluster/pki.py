"""A throw-away PKI for one local cluster, generated with ``cryptography``.

Layout written by :func:`generate_pki` (all PEM):

* ``ca.crt`` / ``ca.key``: self-signed CA (ECDSA P-256) that signs everything and is
  the apiserver's ``--client-ca-file``.
* ``apiserver.crt`` / ``apiserver.key``: serving cert, SANs 127.0.0.1, localhost,
  10.0.0.1 (first IP of the service range) and the ``kubernetes.default.svc`` names.
* ``<user>.crt`` / ``<user>.key`` for each client identity (CN=user, O=groups), e.g.
  ``admin`` (CN=admin, O=system:masters).
* ``sa.key`` / ``sa.pub``: RSA service-account signing key pair.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import os
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Validity of every certificate; clusters are short-lived.
VALIDITY = _dt.timedelta(days=30)

APISERVER_DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
#: 10.88.0.1 is the real node's bridge address, which the apiserver binds when a real node runs.
APISERVER_IPS: tuple[str, ...] = ("127.0.0.1", "10.0.0.1", "10.88.0.1")


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    """A client certificate subject: ``CN=user`` and one ``O=`` per group."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Pki:
    """Paths of a generated PKI."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_private_key: Path
    sa_public_key: Path
    clients: dict[str, tuple[Path, Path]]

    def client(self, name: str) -> tuple[Path, Path]:
        """Return ``(cert, key)`` of a client identity by name."""
        return self.clients[name]


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usages: Sequence[x509.ObjectIdentifier],
    sans: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def generate_ca(common_name: str = "kaito-localcluster-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create a self-signed ECDSA CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_serving_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    dns_names: Sequence[str],
    ips: Sequence[str],
) -> tuple[bytes, bytes]:
    """Issue a TLS serving certificate; return ``(cert_pem, key_pem)``.

    Usable for any local HTTPS server a test needs (e.g. an admission webhook)
    so that its ``caBundle`` is simply the cluster CA.
    """
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert, key = _issue(ca_cert, ca_key, _name(common_name), [ExtendedKeyUsageOID.SERVER_AUTH], sans)
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def generate_pki(directory: Path, clients: Sequence[ClientIdentity]) -> Pki:
    """Generate the full PKI of one cluster into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = generate_ca()
    ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(ca_key_path, _key_pem(ca_key), private=True)

    cert_pem, key_pem = issue_serving_cert(ca_cert, ca_key, "kube-apiserver", APISERVER_DNS_NAMES, APISERVER_IPS)
    serving_cert, serving_key = directory / "apiserver.crt", directory / "apiserver.key"
    _write(serving_cert, cert_pem)
    _write(serving_key, key_pem, private=True)

    client_paths: dict[str, tuple[Path, Path]] = {}
    for ident in clients:
        cert, key = _issue(ca_cert, ca_key, _name(ident.user, ident.groups), [ExtendedKeyUsageOID.CLIENT_AUTH])
        cpath, kpath = directory / f"{ident.name}.crt", directory / f"{ident.name}.key"
        _write(cpath, cert.public_bytes(serialization.Encoding.PEM))
        _write(kpath, _key_pem(key), private=True)
        client_paths[ident.name] = (cpath, kpath)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_priv, sa_pub = directory / "sa.key", directory / "sa.pub"
    _write(sa_priv, sa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ), private=True)
    _write(sa_pub, sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))
    return Pki(
        directory=directory,
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        serving_cert=serving_cert,
        serving_key=serving_key,
        sa_private_key=sa_priv,
        sa_public_key=sa_pub,
        clients=client_paths,
    )


def load_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA cert and key of a generated PKI (to issue more certs)."""
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key} is not an ECDSA key")
    return cert, key
