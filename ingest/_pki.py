"""The fleet PKI: a CA, a broker certificate, one EC P-256 certificate per device, and the CA's CRL.

Used by the `fieldlink` command and by the service's admin API. Every file is written atomically (a
temporary file in the same folder, then a rename), private keys with mode 0600 from the first byte.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ingest._errors import PKIError

_CA_DAYS = 3650
_LEAF_DAYS = 825
_CRL_DAYS = 3650


@dataclass(frozen=True)
class Issued:
    """What the registry keeps of a certificate: its serial (hex), SHA-256 fingerprint and expiry."""

    serial: str
    sha256: str
    not_after: float

    @classmethod
    def of(cls, cert: x509.Certificate) -> Issued:
        return cls(
            serial=format(cert.serial_number, "x"),
            sha256=cert.fingerprint(hashes.SHA256()).hex(),
            not_after=cert.not_valid_after_utc.timestamp(),
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> Issued:
        return cls.of(x509.load_pem_x509_certificate(pem))


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new one, never a part.
    The temporary file has `mode` from its creation, so a key is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name per call (O_EXCL, mode 0600): concurrent writers never share a temporary file.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_private(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # SEC1 ("EC PRIVATE KEY") parses in both OpenSSL (Mosquitto) and mbedTLS (MicroPython).
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldlink"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class PkiLayout:
    """The files of the fleet PKI folder; the one place their names are spelled."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def crl(self) -> Path:
        return self.folder / "crl.pem"

    @property
    def admin_cert(self) -> Path:
        return self.folder / "admin.pem"

    @property
    def admin_key(self) -> Path:
        return self.folder / "admin.key"

    @property
    def ingest_cert(self) -> Path:
        return self.folder / "ingest.pem"

    @property
    def ingest_key(self) -> Path:
        return self.folder / "ingest.key"

    @property
    def broker_cert(self) -> Path:
        return self.folder / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.folder / "broker.key"


@dataclass(frozen=True)
class Credentials:
    """What a device needs to connect (PEM): its certificate and key, and the fleet CA to pin."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes
    issued: Issued

    def der(self) -> dict[str, bytes]:
        """The same in DER, which MicroPython's mbedTLS build parses (it does not parse PEM)."""
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        return {
            "cert.der": x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER),
            "key.der": key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
            "ca.der": x509.load_pem_x509_certificate(self.ca_pem).public_bytes(serialization.Encoding.DER),
        }


class CertificateAuthority:
    """The fleet CA kept in a folder as `ca.pem` and `ca.key`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        layout = PkiLayout(folder)
        self.cert_path, self.key_path = layout.ca_cert, layout.ca_key

    def exists(self) -> bool:
        return self.cert_path.is_file() and self.key_path.is_file()

    def create(self, common_name: str = "fieldlink fleet CA") -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.key_path, _key_pem(key))
        write_atomic(self.cert_path, _cert_pem(cert))

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if not self.exists():
            raise PKIError(f"no fleet CA in {self.folder}; run `fieldlink stack up` first")
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"{self.key_path} is not an EC private key")
        return cert, key

    def issue(
        self,
        common_name: str,
        cert_path: Path,
        key_path: Path,
        *,
        server_names: tuple[str, ...] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        """Issue a leaf certificate into files (see `credentials`)."""
        credentials = self.credentials(
            common_name, server_names=server_names, not_before=not_before, not_after=not_after
        )
        _write_private(key_path, credentials.key_pem)
        write_atomic(cert_path, credentials.cert_pem)
        return credentials.issued

    def credentials(
        self,
        common_name: str,
        *,
        server_names: tuple[str, ...] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Credentials:
        """A new key and a leaf certificate for it, in memory; with `server_names` a server
        certificate. The validity defaults to now (less 5 minutes of clock slack) for _LEAF_DAYS."""
        ca_cert, ca_key = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        not_before = not_before or now - dt.timedelta(minutes=5)
        not_after = not_after or now + dt.timedelta(days=_LEAF_DAYS)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server_names:
            alt: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return Credentials(_cert_pem(cert), _key_pem(key), _cert_pem(ca_cert), Issued.of(cert))

    def write_crl(self, path: Path, revoked: Iterable[tuple[str, float]]) -> None:
        """Write the CA's revocation list: `revoked` holds (serial in hex, revoked at, epoch seconds).
        Valid for _CRL_DAYS; it is written anew at every revocation and at every `stack up`."""
        ca_cert, ca_key = self._load()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=_CRL_DAYS))
        )
        for serial, at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(dt.datetime.fromtimestamp(at, dt.UTC))
                .build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        write_atomic(path, crl.public_bytes(serialization.Encoding.PEM))
