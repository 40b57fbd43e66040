"""A throwaway certificate authority for testing signed packages (docs/policy.md).

`SigningCA(directory)` makes, with `cryptography`, a root, an intermediate and a leaf that
signs (EC P-256 keys: quick to make), an expired leaf (accepted: the runtime does not check
certificate times), and a leaf of another root (refused), writing each as PEM files into
`directory`. `sign_package` writes a package's `.zip.sig` as a publisher would.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from exthandler_sdk.signing import Signer, sign_detached, write_signature

__all__ = ["Identity", "SigningCA"]

_DAY = datetime.timedelta(days=1)


@attrs.frozen(kw_only=True)
class Identity:
    """A key and its certificate, with the PEM files they were written to."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    key_path: Path
    certificate_path: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    directory: Path,
    label: str,
    *,
    issuer: Identity | None,
    ca: bool,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"exthandler test {label}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    usage = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    builder = builder.add_extension(
        x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage),
        critical=True,
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    signing_key = key if issuer is None else issuer.key
    certificate = builder.sign(signing_key, hashes.SHA256())
    key_path = directory / f"{label}.key.pem"
    certificate_path = directory / f"{label}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Identity(
        key=key, certificate=certificate, key_path=key_path, certificate_path=certificate_path
    )


@attrs.define(eq=False)
class SigningCA:
    """A root, an intermediate, and leaves, as PEM files in `directory`.

    `root.certificate_path` is what a runtime trusts (`--trusted-root`); `chain_path` holds
    the intermediate a signature carries; `leaf` signs, `expired_leaf` signs with a
    certificate whose validity ended, `stranger` chains to another root.
    """

    directory: Path
    root: Identity = attrs.field(init=False)
    intermediate: Identity = attrs.field(init=False)
    leaf: Identity = attrs.field(init=False)
    expired_leaf: Identity = attrs.field(init=False)
    other_root: Identity = attrs.field(init=False)
    stranger: Identity = attrs.field(init=False)
    chain_path: Path = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        long = {"not_before": now - _DAY, "not_after": now + 3650 * _DAY}
        self.root = _issue(directory, "root", issuer=None, ca=True, **long)
        self.intermediate = _issue(directory, "intermediate", issuer=self.root, ca=True, **long)
        self.leaf = _issue(directory, "leaf", issuer=self.intermediate, ca=False, **long)
        self.expired_leaf = _issue(
            directory,
            "expired-leaf",
            issuer=self.intermediate,
            ca=False,
            not_before=now - 30 * _DAY,
            not_after=now - _DAY,
        )
        self.other_root = _issue(directory, "other-root", issuer=None, ca=True, **long)
        self.stranger = _issue(directory, "stranger", issuer=self.other_root, ca=False, **long)
        self.chain_path = self.intermediate.certificate_path

    def signer(self, identity: Identity | None = None) -> Signer:
        """A publisher signing with `identity` (default: the leaf), carrying the
        intermediate when the identity is under this CA's root."""
        identity = identity or self.leaf
        chain = () if identity is self.stranger else (self.intermediate.certificate,)
        return Signer(key=identity.key, certificate=identity.certificate, chain=chain)

    def signature(self, data: bytes, identity: Identity | None = None) -> bytes:
        """The DER CMS detached signature of `data` by `identity` (default: the leaf)."""
        return sign_detached(data, self.signer(identity))

    def sign_package(self, package: Path, identity: Identity | None = None) -> Path:
        """Write `<package>.sig` beside the zip `package`; its path."""
        return write_signature(package, self.signer(identity))
