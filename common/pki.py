"""The federation's keys and certificates, made with the ``cryptography`` package only.

Layout of a coordinator's federation folder (``seqwatch-coordinator --dir DIR``)::

    ca.crt              federation CA certificate (give it to every institution)
    ca.key              CA private key (0600; keep it offline after issuing certificates)
    server.pem          SuperLink TLS certificate, signed by the CA, SANs from --san
    server.key          SuperLink TLS private key (0600)
    institutions/NAME       an institution's SuperNode private key, OpenSSH format (0600)
    institutions/NAME.pub   its public key, OpenSSH format (what ``flwr supernode register`` reads)
    institutions.json   registry: name -> public key, SHA256 fingerprint, dates, SuperLink node id

Keys are ECDSA: P-384 for the CA, the SuperLink and the SuperNodes
(``flower-supernode --auth-supernode-private-key`` and ``flwr supernode
register`` want an EC key on a NIST curve in OpenSSH format, as
``ssh-keygen -t ecdsa -b 384`` writes it). Nothing is overwritten unless
``force`` is given; private keys are created with mode 0600 from the start
(``os.open(..., 0o600)``), never chmod-ed afterwards.

Keep this folder out of the app folder that ``flwr run`` packs into a FAB
(a FAB ships ``*.json`` files; ``institutions.json`` holds only public keys,
but it has no business on the nodes).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError, SeqwatchError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
INSTITUTIONS_DIR = "institutions"
REGISTRY = "institutions.json"
REGISTRY_FORMAT = "seqwatch-institutions"

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
#: Names of institutions: file names and SuperNode names at once.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_SANS = ("127.0.0.1", "localhost")


class PkiError(SeqwatchError):
    """A key, certificate or registry problem the coordinator can fix."""


#: A DNS host name: dot-separated labels of letters, digits, '-' and '_' (compose service names).
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"(?=[^\s]{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
#: Certificate validity accepted from ``--days`` (1 day to 100 years).
MAX_DAYS = 36500


def validate_host(host: str) -> str:
    """An IP address (IPv6 without brackets, e.g. ``::``) or a DNS host name; returned unchanged."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.fullmatch(host):
            raise PkiError(
                f"host {host!r}: neither an IP address nor a host name "
                "(e.g. 0.0.0.0, ::, superlink.example.org)"
            ) from None
    return host


def validate_port(port: str | int) -> int:
    """A TCP port, 1-65535 (``--port``, the PORT of ``HOST:PORT``)."""
    text = str(port).strip()
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) < 65536:
        raise PkiError(f"port {port!r}: not a port number (1-65535)")
    return int(text)


def validate_days(days: str | int) -> int:
    """A certificate validity in days: a whole number from 1 to :data:`MAX_DAYS`."""
    text = str(days).strip()
    if not re.fullmatch(r"[0-9]{1,6}", text) or not 0 < int(text) <= MAX_DAYS:
        raise PkiError(f"days {days!r}: give the validity as a whole number of days, 1-{MAX_DAYS}")
    return int(text)


def validate_address(address: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` without a scheme; returns (host, port)."""
    if "://" in address:
        raise PkiError(f"address {address!r}: give host:port without a scheme (no https://)")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]/]+):(\d+)", address)
    if not m:
        raise PkiError(f"address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8000 or [::1]:8000")
    host = m.group(1) or m.group(3)
    try:
        if m.group(1) is not None and not isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            raise ValueError
    except ValueError:
        raise PkiError(f"address {address!r}: [...] must hold an IPv6 address, e.g. [::1]:8000") from None
    try:
        validate_host(host)
        port = validate_port(m.group(2) or m.group(4))
    except PkiError as exc:
        raise PkiError(f"address {address!r}: {exc}") from None
    return host, port


def names_in(cert: x509.Certificate) -> list[str]:
    """The host names and IP addresses a certificate is valid for (its SANs), as text."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(v) for v in (*sans.get_values_for_type(x509.DNSName), *sans.get_values_for_type(x509.IPAddress))
    ]


def covers(cert: x509.Certificate, host: str) -> bool:
    """Whether a TLS client connecting to ``host`` accepts ``cert`` by name (IPs compared as
    addresses, names without case; no wildcards, which server-cert never writes)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".") in {n.lower().rstrip(".") for n in names_in(cert)}
    return any(_same_ip(address, n) for n in names_in(cert))


def _same_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str) -> bool:
    try:
        return ipaddress.ip_address(name) == address
    except ValueError:
        return False


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` (a SuperLink certificate from before ``init-ca --force`` was not)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def validity_problem(cert: x509.Certificate, *, within_days: int = 0) -> str | None:
    """Why ``cert`` is unusable now (expired, not yet valid) or expires within ``within_days``.

    None when it is valid for at least ``within_days`` more days.
    """
    now = _now()
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return f"is not valid before {start:%Y-%m-%d %H:%M} UTC (check this machine's clock)"
    if now >= end:
        return f"expired on {end:%Y-%m-%d %H:%M} UTC"
    left = end - now
    if left < dt.timedelta(days=within_days):
        days = "less than a day" if left.days == 0 else f"{left.days} day{'' if left.days == 1 else 's'}"
        return f"expires in {days} ({end:%Y-%m-%d %H:%M} UTC)"
    return None


# --------------------------------------------------------------------------- files


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_free(paths: Iterable[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise PkiError(
            f"{', '.join(str(p) for p in existing)} already exist(s); refusing to overwrite "
            "(use --force to replace, which invalidates everything issued from the old file)"
        )


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file created with mode 0600 (replaces an existing file only via a fresh inode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, PRIVATE_MODE)  # umask may have cleared bits, never added any
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, PUBLIC_MODE)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- keys


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def openssh_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def openssh_public(key: ec.EllipticCurvePublicKey, comment: str = "") -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + (f" {comment}".encode() if comment else b"") + b"\n"


def ssh_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -lf`` prints it."""
    blob = base64.b64decode(openssh_public(key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_ssh_public(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{path}: not an OpenSSH public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PkiError(f"{path}: not an ECDSA public key ({type(key).__name__}); use ECDSA P-384")
    return key


# --------------------------------------------------------------------------- certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "seqwatch federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def parse_san(value: str) -> x509.GeneralName:
    """An IP address (v4/v6) or a DNS name as a SubjectAlternativeName entry."""
    text = value.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9_*]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?)+", text):
        raise ConfigError(f"--san {value!r}: neither an IP address nor a DNS name")
    return x509.DNSName(text.rstrip("."))


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from None


def is_ca_cert(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


@dataclass(frozen=True)
class Federation:
    """Paths of a coordinator's federation folder."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> Federation:
        return cls(Path(path).expanduser().resolve())

    @property
    def ca_cert(self) -> Path:
        return self.root / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.root / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.root / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.root / SERVER_KEY

    @property
    def institutions(self) -> Path:
        return self.root / INSTITUTIONS_DIR

    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY

    def private_key(self, name: str) -> Path:
        return self.institutions / name

    def public_key(self, name: str) -> Path:
        return self.institutions / f"{name}.pub"

    # -- CA --------------------------------------------------------------------------------
    def init_ca(
        self, *, common_name: str = "seqwatch federation CA", days: int = 3650, force: bool = False
    ) -> Path:
        """Federation CA: P-384 key + self-signed certificate (CA:TRUE, pathlen 0)."""
        days = validate_days(days)
        _check_free([self.ca_key, self.ca_cert], force)
        key = new_ec_key()
        now = _now()
        name = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
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
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA384())
        )
        self.root.mkdir(parents=True, exist_ok=True)
        write_private(self.ca_key, pem_private(key))
        write_public(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        return self.ca_cert

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        for p in (self.ca_cert, self.ca_key):
            if not p.is_file():
                raise PkiError(f"{p}: missing; run 'seqwatch-coordinator --dir {self.root} init-ca' first")
        cert = load_cert(self.ca_cert)
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key}: not an EC private key")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise PkiError(f"{self.ca_key} does not belong to {self.ca_cert}")
        return cert, key

    # -- SuperLink certificate ----------------------------------------------------------------
    def server_cert_issue(
        self, sans: Sequence[str] = DEFAULT_SANS, *, days: int = 825, force: bool = False
    ) -> Path:
        """SuperLink certificate + key signed by the CA, for every --san (IPs and DNS names)."""
        if not sans:
            raise ConfigError("give at least one --san (the addresses SuperNodes and flwr use)")
        days = validate_days(days)
        names = [parse_san(s) for s in sans]
        _check_free([self.server_key, self.server_cert], force)
        ca_cert, ca_key = self._load_ca()
        problem = validity_problem(ca_cert)
        if problem is not None:
            raise PkiError(
                f"{self.ca_cert}: the CA certificate {problem}; refusing to sign with it (a new CA: "
                "init-ca --force, then a new server-cert; every institution needs the new ca.crt)"
            )
        key = new_ec_key()
        now = _now()
        cn = next((str(s) for s in sans if not _is_ip(s)), str(sans[0]))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA384())
        )
        write_private(self.server_key, pem_private(key))
        write_public(self.server_cert, cert.public_bytes(serialization.Encoding.PEM))
        return self.server_cert

    # -- institutions -------------------------------------------------------------------------
    def read_registry(self) -> dict[str, Any]:
        if not self.registry_path.is_file():
            return {"format": REGISTRY_FORMAT, "format_version": 1, "institutions": {}}
        try:
            data = json.loads(self.registry_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise PkiError(f"{self.registry_path}: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
            raise PkiError(f"{self.registry_path}: not a seqwatch institutions registry")
        data.setdefault("institutions", {})
        return data

    def write_registry(self, data: dict[str, Any]) -> None:
        write_public(self.registry_path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())

    def add_institution(self, name: str, *, public_key: Path | None = None, force: bool = False) -> Path:
        """Key pair (or the institution's own public key) + registry entry; returns the ``.pub`` path."""
        check_name(name)
        registry = self.read_registry()
        paths = [self.public_key(name)] + ([] if public_key else [self.private_key(name)])
        if name in registry["institutions"] and not force:
            raise PkiError(
                f"institution {name!r} is already in {self.registry_path}; use --force to replace its key"
            )
        twins = [o for o in registry["institutions"] if o != name and o.casefold() == name.casefold()]
        if twins:
            raise PkiError(
                f"institution {twins[0]!r} is already in {self.registry_path}, and {name!r} differs from it "
                f"only in case: their key files would be one file where case is ignored (macOS, Windows); "
                f"choose another name, or use {twins[0]!r}"
            )
        _check_free(paths, force)
        key: ec.EllipticCurvePrivateKey | None = None
        if public_key is not None:
            pub = load_ssh_public(public_key)
        else:
            key = new_ec_key()
            pub = key.public_key()
        if not isinstance(pub.curve, ec.SECP384R1 | ec.SECP256R1 | ec.SECP521R1):
            raise PkiError(f"{public_key}: EC curve {pub.curve.name} is not a NIST curve Flower accepts")
        fingerprint = ssh_fingerprint(pub)
        for other, entry in sorted(registry["institutions"].items()):
            if other != name and entry.get("fingerprint") == fingerprint:
                raise PkiError(
                    f"{public_key}: this public key ({fingerprint}) is already registered as institution "
                    f"{other!r}; every institution needs its own key pair (ask {name} for its own public key)"
                )
        if key is not None:
            write_private(self.private_key(name), openssh_private(key))
        elif force:
            self.private_key(name).unlink(missing_ok=True)
        write_public(self.public_key(name), openssh_public(pub, name))
        registry["institutions"][name] = {
            "public_key": openssh_public(pub, name).decode().strip(),
            "fingerprint": fingerprint,
            "key_file": str(self.private_key(name)) if public_key is None else None,
            "public_key_file": str(self.public_key(name)),
            "added": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "node_id": None,
        }
        self.write_registry(registry)
        return self.public_key(name)

    def institution_names(self) -> list[str]:
        return sorted(self.read_registry()["institutions"])

    def record_node_id(self, name: str, node_id: int | None) -> None:
        registry = self.read_registry()
        if name in registry["institutions"]:
            registry["institutions"][name]["node_id"] = node_id
            registry["institutions"][name]["registered"] = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
            self.write_registry(registry)


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name) or name.endswith(".pub"):
        raise ConfigError(
            f"institution name {name!r}: use 1-63 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, not ending in .pub)"
        )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True
