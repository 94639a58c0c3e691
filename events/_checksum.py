"""The checksum stored with each event row, and checked whenever a row is read back.

A 64-bit BLAKE2b digest of the row's stored identity and bytes: stream id, version, type tag,
schema version and the encoded payload. A flipped bit in any of them (a bad disk, a hand-edited
row, a restore gone wrong) shows as a mismatch, named by stream and version, instead of a
different event. It is a guard against damage, not against someone who rewrites the checksum.
"""

from __future__ import annotations

import struct
from hashlib import blake2b

_HEADER = struct.Struct(">qq")


def event_checksum(
    stream_id: str, version: int, event_type: str, schema_version: int, data: bytes | str
) -> int:
    """The signed 64-bit checksum of a stored event (fits SQLite INTEGER and PostgreSQL bigint).

    The text fields are length-prefixed so that moving bytes between them changes the digest.
    """
    stream = stream_id.encode()
    tag = event_type.encode()
    payload = data.encode() if isinstance(data, str) else data
    digest = blake2b(digest_size=8)
    digest.update(_HEADER.pack(len(stream), len(tag)))
    digest.update(stream)
    digest.update(tag)
    digest.update(_HEADER.pack(version, schema_version))
    digest.update(payload)
    return int.from_bytes(digest.digest(), "big", signed=True)
