"""Finding secrets in EC2 user data, however it was encoded.

User data is readable by anyone who can describe the instance or its launch template and
by every process on the node through IMDS, so it must carry no key material. Launch
templates hold it base64-encoded; cloud-init also accepts gzip, and scripts often embed a
base64 blob they decode at boot. Each of those layers is peeled once before searching.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import zlib

#: (what it is, how it looks). Only unmistakable markers: a false alarm blocks a deployment.
SECRET_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a PEM private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY")),
    ("a PuTTY private key", re.compile(r"PuTTY-User-Key-File-")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("an AWS secret access key", re.compile(r"aws_secret_access_key", re.IGNORECASE)),
)

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_GZIP_MAGIC = b"\x1f\x8b"


def find_secrets(user_data: str) -> list[str]:
    """What secret material ``user_data`` carries, as short descriptions; empty when none."""
    found: list[str] = []
    for text in _readings(user_data):
        for label, pattern in SECRET_MARKERS:
            if label not in found and pattern.search(text):
                found.append(label)
    return found


def _readings(user_data: str) -> list[str]:
    """The text as given, decoded as a whole, and each embedded base64 run decoded."""
    readings = [user_data]
    whole = _decode_base64(user_data)
    if whole is not None:
        readings.append(whole)
    for text in list(readings):
        readings.extend(decoded for run in _BASE64_RUN.findall(text) if (decoded := _decode_base64(run)) is not None)
    return readings


def _decode_base64(text: str) -> str | None:
    compact = "".join(text.split())
    if not compact or len(compact) % 4:
        return None
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            return None
    return raw.decode("utf-8", errors="replace")
