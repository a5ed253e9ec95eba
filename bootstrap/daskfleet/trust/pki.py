"""A per-cluster PKI: a CA and role certificates (scheduler, worker, client) with ECDSA P-256.

The role is written as a SAN URI (conventions.role_uri); the Pulumi program issues the same
certificates with pulumi-tls. Files are written 0600 inside 0700 directories.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import conventions
from ..errors import DaskfleetError, ExitCode


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, as PEM text."""

    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:  # never print a key
        return "IssuedCert(<cert>, <key>)"


@dataclass(frozen=True)
class CertIdentity:
    """What a certificate says about its holder."""

    cluster: str | None
    role: str | None
    common_name: str
    not_before: dt.datetime
    not_after: dt.datetime


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_ca(cluster: str, *, valid_hours: int = conventions.CA_VALIDITY_HOURS) -> IssuedCert:
    """A self-signed CA for one cluster."""
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, conventions.CERT_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster} cluster CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=valid_hours))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def new_private_key_pem() -> str:
    """A fresh ECDSA P-256 private key (PKCS#8 PEM): made where it is used, never sent anywhere."""
    return _key_pem(_new_key())


def make_csr(key_pem: str) -> str:
    """A certificate signing request for ``key_pem``'s public key; the vendor reads only the key (and the CSR's
    signature, the proof of possession) and decides everything the certificate says itself."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    request = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, conventions.CERT_ORGANIZATION)])
    ).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def public_key_der(pem: str) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a certificate, CSR or private key in PEM: the same bytes for all three."""
    data = pem.encode()
    if b"PRIVATE KEY" in data:
        public = serialization.load_pem_private_key(data, password=None).public_key()
    elif b"CERTIFICATE REQUEST" in data:
        public = x509.load_pem_x509_csr(data).public_key()
    else:
        public = x509.load_pem_x509_certificate(data).public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def issue_certificate(
    ca: IssuedCert,
    cluster: str,
    role: conventions.Role,
    *,
    user: str | None = None,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    valid_hours: int = conventions.CERT_VALIDITY_HOURS,
    not_before: dt.datetime | None = None,
) -> IssuedCert:
    """A role certificate and a new key, signed by ``ca``; clients carry ``user`` as their identity."""
    key = _new_key()
    start = not_before or (_now() - dt.timedelta(minutes=5))
    cert_pem = sign_public_key(
        ca, key.public_key(), cluster, role, user=user, dns_names=dns_names, ip_addresses=ip_addresses,
        not_before=start, not_after=start + dt.timedelta(hours=valid_hours),
    )
    return IssuedCert(cert_pem, _key_pem(key))


def sign_public_key(
    ca: IssuedCert,
    public_key: ec.EllipticCurvePublicKey,
    cluster: str,
    role: conventions.Role,
    *,
    user: str | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> str:
    """A role certificate (PEM) for ``public_key``, signed by ``ca``, valid from ``not_before`` to ``not_after``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(conventions.role_uri(cluster, role))]
    sans += [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, conventions.CERT_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, conventions.common_name(cluster, role, user)),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def identity_of(cert_pem: str) -> CertIdentity:
    """Read role, cluster, CN and validity from a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cluster = role = None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            parsed = conventions.parse_role_uri(uri)
            if parsed:
                cluster, role = parsed
                break
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertIdentity(
        cluster=cluster,
        role=role,
        common_name=str(cns[0].value) if cns else "",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def check_node_certificate(ca_pem: str, cert_pem: str, key_pem: str, *, cluster: str, role: str, origin: str) -> CertIdentity:
    """Check a node's TLS material before it is used; one DaskfleetError per failure class."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except ValueError as exc:
        raise DaskfleetError(f"{origin}: unreadable PEM ({exc})", ExitCode.CERT_UNREADABLE) from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise DaskfleetError(f"{origin}: certificate was not issued by the cluster CA", ExitCode.CERT_UNREADABLE) from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise DaskfleetError(f"{origin}: private key does not match the certificate", ExitCode.CERT_UNREADABLE)
    identity = identity_of(cert_pem)
    now = _now()
    for label, subject in (("CA certificate", ca), ("certificate", cert)):
        if now < subject.not_valid_before_utc:
            raise DaskfleetError(
                f"{origin}: {label} is not valid before {subject.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
                ExitCode.CERT_NOT_VALID_NOW,
            )
        if now > subject.not_valid_after_utc:
            raise DaskfleetError(
                f"{origin}: {label} expired at {subject.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
                ExitCode.CERT_NOT_VALID_NOW,
            )
    if (identity.cluster, identity.role) != (cluster, role):
        found = conventions.role_uri(identity.cluster, identity.role) if identity.role else "no role URI"
        raise DaskfleetError(
            f"{origin}: certificate is for {found}, this node needs {conventions.role_uri(cluster, role)}",
            ExitCode.CERT_ROLE_MISMATCH,
        )
    return identity


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, its directory 0700, atomically."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
