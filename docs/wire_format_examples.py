"""Generates the worked byte-level examples in docs/wire-format.md from sensors.wire, so they are exact.

Run ``python docs/wire_format_examples.py`` to rewrite the generated blocks in place;
tests/test_wire.py fails when a block no longer matches what this script prints.
"""

from __future__ import annotations

import re
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sensors.wire import DType, Encoding, Kind, SensorMessage, encode

DOC = Path(__file__).with_name("wire-format.md")
TIMESTAMP_NS = 1_795_939_200_000_000_000  # 2026-11-29T08:00:00Z
# An 8x8 grey JPEG (Pillow, quality 50), fixed here so the example does not depend on the encoder.
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d"
    "283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffc0000b08000800080101"
    "1100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000020103030204030505"
    "04040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a8384858687"
    "88898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2"
    "e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f002bffd9"
)
VIBRATION = SensorMessage(
    "pump-1", Kind.VIBRATION, 42, TIMESTAMP_NS,
    np.array([[0.5, -1.0], [0.25, 2.0], [-0.125, 1.5]], dtype=np.float32), 25_600.0,
    meta={"unit": "g"},
)
FRAME = SensorMessage("cam-1", Kind.FRAME, 7, TIMESTAMP_NS, JPEG, 0.0, Encoding.JPEG,
                      meta={"part_id": "P-000123"})
# (name, struct format, offset) of the 44-byte header, as the document's layout table states it.
HEADER_FIELDS = [
    ("magic", "4s", 0), ("version", "B", 4), ("kind", "B", 5), ("encoding", "B", 6), ("dtype", "B", 7),
    ("seq", "Q", 8), ("timestamp_ns", "q", 16), ("sample_rate", "d", 24), ("sensor_id_len", "H", 32),
    ("meta_len", "H", 34), ("ndim", "B", 36), ("reserved", "3s", 37), ("payload_len", "I", 40),
]
CODES: dict[str, type[Kind] | type[Encoding] | type[DType]] = {"kind": Kind, "encoding": Encoding,
                                                                "dtype": DType}


def hex_bytes(raw: bytes) -> str:
    return " ".join(f"{b:02x}" for b in raw)


def _value(name: str, value: Any) -> str:
    if name in CODES:
        return f"{value} ({CODES[name](value).name.lower()})"
    if name == "timestamp_ns":
        stamp = datetime.fromtimestamp(value // 10**9, tz=timezone.utc)
        return f"{value} ({stamp:%Y-%m-%dT%H:%M:%SZ})"
    if isinstance(value, bytes):
        return repr(value)[1:]
    return str(value)


def field_table(wire: bytes, payload_rows: list[tuple[int, int, str]]) -> str:
    """Markdown table of every field of one message, decoded with the documented offsets only."""
    rows = ["| Offset | Size | Bytes (hex) | Field | Value |", "|---:|---:|---|---|---|"]
    fields: dict[str, Any] = {}
    for name, fmt, offset in HEADER_FIELDS:
        size = struct.calcsize("<" + fmt)
        (fields[name],) = struct.unpack_from("<" + fmt, wire, offset)
        rows.append(f"| {offset} | {size} | `{hex_bytes(wire[offset:offset + size])}` | {name} | "
                    f"{_value(name, fields[name])} |")
    offset = 44
    ndim, sid_len, meta_len = fields["ndim"], fields["sensor_id_len"], fields["meta_len"]
    for axis in range(ndim):
        (dim,) = struct.unpack_from("<I", wire, offset)
        rows.append(f"| {offset} | 4 | `{hex_bytes(wire[offset:offset + 4])}` | shape[{axis}] | {dim} |")
        offset += 4
    for name, size in (("sensor_id", sid_len), ("meta", meta_len)):
        text = wire[offset:offset + size].decode()
        rows.append(f"| {offset} | {size} | `{hex_bytes(wire[offset:offset + size])}` | {name} | `{text}` |")
        offset += size
    for start, size, label in payload_rows:
        chunk = wire[offset + start:offset + start + size]
        rows.append(f"| {offset + start} | {size} | `{hex_bytes(chunk)}` | payload | {label} |")
    crc_at = len(wire) - 4
    (crc,) = struct.unpack_from("<I", wire, crc_at)
    rows.append(f"| {crc_at} | 4 | `{hex_bytes(wire[crc_at:])}` | crc32 | 0x{crc:08x} "
                f"(zlib/IEEE CRC-32 of bytes 0-{crc_at - 1}) |")
    return "\n".join(rows)


def hex_dump(wire: bytes, limit: int | None = None) -> str:
    """xxd-style dump; with a limit, the middle of a long payload is elided."""
    lines: list[str] = []
    last_line = (len(wire) - 1) // 16 * 16
    for start in range(0, len(wire), 16):
        if limit is not None and limit <= start < last_line:
            if start == limit:
                lines.append(f"... ({last_line - limit} bytes of JPEG data elided)")
            continue
        chunk = wire[start:start + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {hex_bytes(chunk[:8]):<23}  {hex_bytes(chunk[8:]):<23}  |{text}|")
    return "```text\n" + "\n".join(lines) + "\n```"


def render() -> dict[str, str]:
    """The generated blocks of the document, by name."""
    vibration = encode(VIBRATION)
    samples = VIBRATION.samples
    vibration_rows = [(8 * i, 8, f"sample {i}: float32 {samples[i, 0]}, {samples[i, 1]}")
                      for i in range(len(samples))]
    frame = encode(FRAME)
    frame_rows = [(0, 4, f"first bytes of the {len(JPEG)}-byte JPEG (SOI `ff d8`, APP0 `ff e0`)"),
                  (len(JPEG) - 2, 2, "last bytes of the JPEG (EOI `ff d9`)")]
    return {
        "vibration-table": f"Total length: {len(vibration)} bytes.\n\n" + field_table(vibration, vibration_rows),
        "vibration-hex": hex_dump(vibration),
        "jpeg-table": f"Total length: {len(frame)} bytes.\n\n" + field_table(frame, frame_rows),
        "jpeg-hex": hex_dump(frame, limit=96),
    }


def splice(text: str, name: str, block: str) -> str:
    """The document text with the generated block ``name`` replaced by ``block``."""
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise KeyError(f"{DOC.name} has no generated block {name!r}")
    return pattern.sub(lambda match: match.group(1) + block + "\n" + match.group(2), text)


def main() -> int:
    text = DOC.read_text()
    for name, block in render().items():
        text = splice(text, name, block)
    DOC.write_text(text)
    print(f"rewrote the generated blocks of {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
