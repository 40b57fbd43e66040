"""`ssh_key`: an OpenSSH public key line, or a PEM certificate or public key to take the
key from, turned into the one `authorized_keys` line VM Access writes.

A PEM document is read with a minimal DER reader (X.509 `Certificate`, or a bare
`SubjectPublicKeyInfo`): the key inside becomes an `ssh-rsa`, `ssh-ed25519` or
`ecdsa-sha2-nistp*` key, with no dependency beyond the standard library, so the packaged
handler converts certificates on a machine that has nothing but `python3`.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

import attrs

__all__ = ["KEY_TYPES", "MAX_KEY_LENGTH", "SshKey", "key_identity", "parse_ssh_key"]

MAX_KEY_LENGTH = 16 * 1024
"""Characters an `ssh_key` setting may have (an RSA 16384-bit certificate fits)."""

_BASE_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
KEY_TYPES = frozenset(
    {
        *_BASE_TYPES,
        *(f"{kind.removesuffix('@openssh.com')}-cert-v01@openssh.com" for kind in _BASE_TYPES),
    }
)
"""The key types an OpenSSH public key line may have (plain keys and OpenSSH certificates)."""

_PEM = re.compile(
    r"-----BEGIN (?P<label>CERTIFICATE|PUBLIC KEY)-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)"
    r"\s*-----END (?P=label)-----",
)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_PRINTABLE_COMMENT = re.compile(r"[\x20-\x7e]*")

# DER object identifiers, as their encoded bytes.
_RSA = bytes.fromhex("2a864886f70d010101")
_EC = bytes.fromhex("2a8648ce3d0201")
_ED25519 = bytes.fromhex("2b6570")
_CURVES = {
    bytes.fromhex("2a8648ce3d030107"): "nistp256",
    bytes.fromhex("2b81040022"): "nistp384",
    bytes.fromhex("2b81040023"): "nistp521",
}
_SEQUENCE, _INTEGER, _BIT_STRING, _OID, _VERSION_TAG = 0x30, 0x02, 0x03, 0x06, 0xA0


@attrs.frozen
class SshKey:
    """One public key: its type, its base64 blob and an optional comment."""

    kind: str
    blob: str
    comment: str = ""

    @property
    def line(self) -> str:
        """The `authorized_keys` line (without its newline)."""
        return " ".join(part for part in (self.kind, self.blob, self.comment) if part)


def parse_ssh_key(text: str) -> SshKey:
    """The key `text` holds; ValueError saying what is wrong otherwise."""
    text = text.strip()
    if not text:
        raise ValueError("must not be empty")
    if len(text) > MAX_KEY_LENGTH:
        raise ValueError(f"longer than {MAX_KEY_LENGTH} characters")
    if text.startswith("-----BEGIN"):
        return _from_pem(text)
    if "\n" in text or "\r" in text or "\0" in text:
        raise ValueError("an OpenSSH public key is a single line")
    parts = text.split(None, 2)
    kind = parts[0]
    if kind not in KEY_TYPES:
        raise ValueError(
            f"not an OpenSSH public key or a PEM certificate (unknown key type {kind[:40]!r}; "
            "options before the key type are not accepted)"
        )
    if len(parts) < 2:
        raise ValueError(f"the {kind} key has no base64 data")
    blob = parts[1]
    data = _decode_blob(blob)
    if _first_string(data) != kind.encode():
        raise ValueError(f"the base64 data is not a {kind} key")
    comment = " ".join(parts[2].split()) if len(parts) > 2 else ""
    if not _PRINTABLE_COMMENT.fullmatch(comment):
        raise ValueError("the comment after the key may hold only printable ASCII")
    return SshKey(kind, blob, comment)


def key_identity(line: str) -> tuple[str, str] | None:
    """(type, blob) of an `authorized_keys` line, options and comment left out; None for a
    line that holds no key (blank, comment, or not understood)."""
    fields = line.split()
    for index, field in enumerate(fields[:-1]):
        # The key type is the first field that is one; options before it may hold spaces
        # only inside quotes, which never make a field equal to a key type.
        if field in KEY_TYPES:
            return field, fields[index + 1]
    return None


def _decode_blob(blob: str) -> bytes:
    if not _BASE64.fullmatch(blob):
        raise ValueError("the key data is not base64")
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key data is not base64") from None


def _first_string(data: bytes) -> bytes | None:
    if len(data) < 4:
        return None
    (length,) = struct.unpack(">I", data[:4])
    if length > len(data) - 4:
        return None
    return data[4 : 4 + length]


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _from_pem(text: str) -> SshKey:
    match = _PEM.fullmatch(text)
    if match is None:
        raise ValueError(
            "a PEM ssh_key must be one certificate (BEGIN CERTIFICATE) or one public key "
            "(BEGIN PUBLIC KEY)"
        )
    try:
        der = base64.b64decode("".join(match["body"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the PEM body is not base64") from None
    try:
        if match["label"] == "CERTIFICATE":
            spki = _certificate_key_info(der)
        else:
            spki = _whole(der, _SEQUENCE)
        data = _ssh_blob(spki)
    except _DerError as exc:
        what = "certificate" if match["label"] == "CERTIFICATE" else "public key"
        raise ValueError(f"not a usable {what}: {exc}") from None
    kind = _first_string(data)
    assert kind is not None
    return SshKey(kind.decode(), base64.b64encode(data).decode())


class _DerError(ValueError):
    pass


def _element(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, position after) of the DER element at `pos` of `data`."""
    if pos + 2 > len(data):
        raise _DerError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise _DerError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise _DerError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _children(content: bytes) -> list[tuple[int, bytes]]:
    found: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(content):
        tag, value, pos = _element(content, pos)
        found.append((tag, value))
    return found


def _whole(der: bytes, tag: int) -> bytes:
    """The content of `der`, which must be one element with `tag` and nothing after it."""
    found, content, end = _element(der, 0)
    if found != tag or end != len(der):
        raise _DerError("unexpected DER structure")
    return content


def _certificate_key_info(der: bytes) -> bytes:
    certificate = _children(_whole(der, _SEQUENCE))
    if not certificate or certificate[0][0] != _SEQUENCE:
        raise _DerError("no tbsCertificate")
    fields = _children(certificate[0][1])
    if fields and fields[0][0] == _VERSION_TAG:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < 6 or fields[5][0] != _SEQUENCE:
        raise _DerError("no subjectPublicKeyInfo")
    return fields[5][1]


def _ssh_blob(spki: bytes) -> bytes:
    parts = _children(spki)
    if len(parts) != 2 or parts[0][0] != _SEQUENCE or parts[1][0] != _BIT_STRING:
        raise _DerError("bad subjectPublicKeyInfo")
    algorithm = _children(parts[0][1])
    if not algorithm or algorithm[0][0] != _OID:
        raise _DerError("bad algorithm identifier")
    bits = parts[1][1]
    if not bits or bits[0] != 0:
        raise _DerError("bad public key bit string")
    key = bits[1:]
    oid = algorithm[0][1]
    if oid == _RSA:
        numbers = _children(_whole(key, _SEQUENCE))
        if len(numbers) != 2 or any(tag != _INTEGER for tag, _ in numbers):
            raise _DerError("bad RSA public key")
        modulus, exponent = numbers[0][1], numbers[1][1]
        # A DER INTEGER's content is already an SSH mpint: big-endian two's complement,
        # minimal, with a leading zero byte when the top bit is set.
        return _ssh_string(b"ssh-rsa") + _ssh_string(exponent) + _ssh_string(modulus)
    if oid == _ED25519:
        if len(key) != 32:
            raise _DerError("bad Ed25519 public key")
        return _ssh_string(b"ssh-ed25519") + _ssh_string(key)
    if oid == _EC:
        curve = _CURVES.get(algorithm[1][1]) if len(algorithm) > 1 else None
        if curve is None:
            raise _DerError("an elliptic curve other than P-256, P-384 or P-521")
        if not key or key[0] != 0x04:
            raise _DerError("a compressed or bad elliptic curve point")
        kind = f"ecdsa-sha2-{curve}".encode()
        return _ssh_string(kind) + _ssh_string(curve.encode()) + _ssh_string(key)
    raise _DerError("a key type other than RSA, Ed25519 or ECDSA")
