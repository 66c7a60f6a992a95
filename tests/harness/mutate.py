"""Fuzz inputs: valid wire messages of every kind and deterministic mutations of them (bad headers, rates, sizes)."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from sensors.wire import CRC, HEADER, Encoding, Kind, SensorMessage, encode

Fields = list[object]  # HEADER's fields, in order: magic version kind encoding dtype seq ts rate sid meta ndim len
BAD_RATES = (0.0, -1.0, -5e-324, float("nan"), float("inf"), 1e308, 1.0000001e7)
TINY_RATES = (5e-324, 1e-310, 1e-300, 1e-30)
RATE, KIND, ENCODING, DTYPE, SEQ, TIME, NDIM, PAYLOAD_LEN = 7, 2, 3, 4, 5, 6, 10, 11


def image(kind: str, rng: random.Random) -> bytes:
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=kind)
    return out.getvalue()


def bases(rng: random.Random) -> dict[str, bytes]:
    """One valid message per kind and encoding: what the mutations start from."""
    when = 1_700_000_000_000_000_000
    samples = np.sin(np.arange(250, dtype=np.float32))[:, None]
    return {
        "vibration": encode(SensorMessage("fuzz-vib", Kind.VIBRATION, 1, when, samples, 1000.0)),
        "audio": encode(SensorMessage("fuzz-mic", Kind.AUDIO, 1, when, (samples * 1000).astype(np.int16), 16000.0)),
        "frame_raw": encode(SensorMessage("fuzz-cam", Kind.FRAME, 1, when, np.zeros((24, 32, 3), np.uint8))),
        "frame_jpeg": encode(SensorMessage("fuzz-cam", Kind.FRAME, 2, when, image("JPEG", rng), 0.0, Encoding.JPEG)),
        "frame_png": encode(SensorMessage("fuzz-cam", Kind.FRAME, 3, when, image("PNG", rng), 0.0, Encoding.PNG)),
    }


def split(message: bytes) -> tuple[Fields, bytes]:
    """Header fields and what follows the header, without the CRC."""
    return list(HEADER.unpack_from(message, 0)), message[HEADER.size:-CRC.size]


def join(fields: Fields, rest: bytes) -> bytes:
    """Wire bytes from header fields and body, with a correct CRC so that the mutation reaches deeper checks."""
    body = HEADER.pack(*fields) + rest
    return body + CRC.pack(zlib.crc32(body))


def with_rate(message: bytes, rate: float) -> bytes:
    fields, rest = split(message)
    fields[RATE] = rate
    return join(fields, rest)


def bad_rate(message: bytes, rng: random.Random) -> bytes:
    """Rates the wire format refuses: zero, negative, NaN, infinite, above 1e7 Hz; or non-zero for a frame."""
    return with_rate(message, rng.choice(BAD_RATES))


def tiny_rate(message: bytes, rng: random.Random) -> bytes:
    """Positive rates so small that samples / rate overflows (5e-324 took today's agent down, issue 9 item 1)."""
    return with_rate(message, rng.choice(TINY_RATES))


def header_field(message: bytes, rng: random.Random) -> bytes:
    """One header field set to an edge value (ranges and signs as the struct allows), CRC kept right."""
    fields, rest = split(message)
    index = rng.choice((1, KIND, ENCODING, DTYPE, SEQ, TIME, 8, 9, NDIM, PAYLOAD_LEN))
    limits = {SEQ: 2**64 - 1, TIME: 2**63 - 1, 8: 2**16 - 1, 9: 2**16 - 1, PAYLOAD_LEN: 2**32 - 1}
    top = limits.get(index, 255)
    low = -(2**63) if index == TIME else 0
    fields[index] = rng.choice((low, 0, 1, top, rng.randint(low, top)))
    return join(fields, rest)


def truncate(message: bytes, rng: random.Random) -> bytes:
    return message[: rng.randrange(len(message))]


def bit_flips(message: bytes, rng: random.Random) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    fields, rest = split(bytes(data)) if len(data) >= HEADER.size + CRC.size else ([], b"")
    return join(fields, rest) if fields and rng.random() < 0.5 else bytes(data)


def non_finite(message: bytes, rng: random.Random) -> bytes:
    fields, rest = split(message)
    payload = bytearray(rest[len(rest) - int(fields[PAYLOAD_LEN]):])  # type: ignore[call-overload]
    offset = 4 * rng.randrange(len(payload) // 4)
    payload[offset:offset + 4] = struct.pack("<f", rng.choice((float("nan"), float("inf"), -float("inf"))))
    return join_payload(fields, rest, bytes(payload))


def huge(message: bytes, rng: random.Random) -> bytes:
    """Claims of huge sizes with a small body, or (one time in 400) a real 8 MiB raw frame."""
    choice = rng.randrange(2) if rng.random() > 1 / 400 else 2
    fields, rest = split(message)
    if choice == 0:
        fields[PAYLOAD_LEN] = 2**32 - 1
        return join(fields, rest)
    if choice == 1:
        ndim = int(fields[NDIM])  # type: ignore[call-overload]
        shape = struct.pack(f"<{ndim}I", *([2**32 - 1] * ndim))
        return join(fields, shape + rest[4 * ndim:])
    return big_frame()


@functools.cache
def big_frame() -> bytes:
    """One 8 MiB raw frame, made once and shared by every input that uses it."""
    pixels = np.zeros((1024, 2048, 4), np.uint8)
    return encode(SensorMessage("fuzz-big", Kind.FRAME, 7, 1_700_000_000_000_000_000, pixels))


def broken_image(message: bytes, rng: random.Random) -> bytes:
    """A JPEG or PNG with the right signature and a damaged or cut body, CRC right: the decoder's problem."""
    fields, rest = split(message)
    payload = bytearray(rest[len(rest) - int(fields[PAYLOAD_LEN]):])  # type: ignore[call-overload]
    for _ in range(rng.randint(1, 20)):
        payload[rng.randrange(8, len(payload))] = rng.randrange(256)
    if rng.random() < 0.5:
        payload = payload[: rng.randrange(9, len(payload))]
    return join_payload(fields, rest, bytes(payload))


def join_payload(fields: Fields, rest: bytes, payload: bytes) -> bytes:
    """Wire bytes with the payload at the end of ``rest`` replaced by ``payload`` (its length set in the header)."""
    head = rest[: len(rest) - int(fields[PAYLOAD_LEN])]  # type: ignore[call-overload]
    fields[PAYLOAD_LEN] = len(payload)
    return join(fields, head + payload)


def garbage(message: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 43, 47, rng.randrange(2000))))


def stranger(message: bytes, rng: random.Random) -> bytes:
    """A valid message from one of many unknown sensors (per-sensor state must stay bounded)."""
    fields, rest = split(message)
    sid_len = int(fields[8])  # type: ignore[call-overload]
    ndim = int(fields[NDIM])  # type: ignore[call-overload]
    name = f"x{rng.randrange(10**6):06d}".encode()[:sid_len].ljust(sid_len, b"0")
    return join(fields, rest[: 4 * ndim] + name + rest[4 * ndim + sid_len:])


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bad_rate": bad_rate, "tiny_rate": tiny_rate, "header_field": header_field, "truncate": truncate,
    "bit_flips": bit_flips, "non_finite": non_finite, "huge": huge, "broken_image": broken_image,
    "garbage": garbage, "stranger": stranger,
}
# Which base messages each mutation applies to (non_finite needs float samples, broken_image an image).
APPLIES = {"non_finite": ("vibration",), "broken_image": ("frame_jpeg", "frame_png"),
           "tiny_rate": ("vibration", "audio")}


def pool(seed: int, size: int, skip: frozenset[str] = frozenset()) -> list[tuple[str, bytes]]:
    """``size`` (name, bytes) fuzz inputs, the same for the same seed; ``skip`` leaves mutations out by name."""
    rng = random.Random(seed)
    base = bases(rng)
    names = [name for name in MUTATIONS if name not in skip]
    inputs = []
    for _ in range(size):
        name = rng.choice(names)
        kind = rng.choice(APPLIES.get(name, tuple(base)))
        inputs.append((f"{name}:{kind}", MUTATIONS[name](base[kind], rng)))
    return inputs
