"""The checksum stored with each event row, and checked whenever a row is read back.

A CRC-32 of the row's stored identity and bytes: stream id, version, type tag, schema version
and the encoded payload. A flipped bit in any of them (a bad disk, a hand-edited row, a restore
gone wrong) shows as a mismatch, named by stream and version, instead of a different event.
CRC-32 finds every burst of up to 32 flipped bits and misses random damage once in 2**32; it is
a guard against damage, not against someone who rewrites the checksum too. It costs about half
a microsecond per event (a 64-bit BLAKE2b cost three times that, a tenth of decoding an event).
"""

from __future__ import annotations

import struct
from zlib import crc32

_HEADER = struct.Struct(">qqqq")


def event_checksum(
    stream_id: str, version: int, event_type: str, schema_version: int, data: bytes | str
) -> int:
    """The checksum of a stored event, an unsigned 32-bit integer.

    The text fields are length-prefixed so that moving bytes between them changes the sum.
    """
    stream = stream_id.encode()
    tag = event_type.encode()
    head = _HEADER.pack(len(stream), len(tag), version, schema_version) + stream + tag
    return crc32(data.encode() if isinstance(data, str) else data, crc32(head))
