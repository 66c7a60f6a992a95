"""The sensor wire format: one binary message layout for MQTT, ZeroMQ and recordings.

The layout is documented byte by byte in ``docs/wire-format.md``; this module is
the only place that encodes or decodes it.  Decoding validates every field and
raises :class:`WireError` naming the field that was wrong.  No pickle anywhere.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sensors.errors import WireError


class SensorWireError(WireError):
    """A wire error found after the sensor id was read, so that the rejection is counted against the sensor."""

    def __init__(self, message: str, sensor_id: str, seq: int, timestamp_ns: int) -> None:
        super().__init__(message)
        self.sensor_id = sensor_id
        self.seq = seq
        self.timestamp_ns = timestamp_ns  # as sent: may be the invalid value that was rejected

MAGIC = b"EAGW"
VERSION = 1
HEADER = struct.Struct("<4sBBBBQqdHHB3xI")  # 44 bytes, little-endian
SHAPES = [struct.Struct(f"<{ndim}I") for ndim in range(5)]  # shape dims, by ndim (at most MAX_NDIM)
CRC = struct.Struct("<I")
MAX_SENSOR_ID = 64
MAX_META = 4096
MAX_META_DEPTH = 16  # nested objects and arrays, the top-level object counting as 1
MAX_NDIM = 4
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
SENSOR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")  # use fullmatch: "$" also matches before "\n"
RESERVED = slice(37, 40)  # header bytes that must be zero
MAX_SEQ = 2**64 - 1
MAX_TIMESTAMP_NS = 2**63 - 1
MAX_PAYLOAD_FIELD = 2**32 - 1


class Kind(enum.IntEnum):
    """Stream kinds: continuous signals (vibration, audio) and camera frames."""

    VIBRATION = 1
    FRAME = 2
    AUDIO = 3

    @property
    def continuous(self) -> bool:
        return self is not Kind.FRAME


class Encoding(enum.IntEnum):
    """How the payload is encoded: raw samples or pixels, or a compressed image."""

    RAW = 1
    JPEG = 2
    PNG = 3


class DType(enum.IntEnum):
    """Element types of raw payloads (little-endian); NONE for compressed images."""

    NONE = 0
    UINT8 = 1
    INT16 = 2
    INT32 = 3
    FLOAT32 = 4
    FLOAT64 = 5


NUMPY_DTYPES: dict[DType, np.dtype[Any]] = {
    DType.UINT8: np.dtype("<u1"),
    DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"),
    DType.FLOAT32: np.dtype("<f4"),
    DType.FLOAT64: np.dtype("<f8"),
}
ALLOWED_DTYPES: dict[Kind, frozenset[DType]] = {
    Kind.VIBRATION: frozenset({DType.INT16, DType.INT32, DType.FLOAT32, DType.FLOAT64}),
    Kind.AUDIO: frozenset({DType.INT16, DType.FLOAT32}),
    Kind.FRAME: frozenset({DType.UINT8}),
}
MAX_CHANNELS = 64
#: sane sample rates per continuous kind, in Hz (both ends inclusive): a rate outside them is a broken or
#: hostile sensor, and a tiny one would make sample times overflow downstream (5e-324 Hz once did)
SAMPLE_RATE_BOUNDS: dict[Kind, tuple[float, float]] = {Kind.VIBRATION: (1.0, 1e6), Kind.AUDIO: (1.0, 384_000.0)}
# Leading bytes that a compressed frame payload must start with.
IMAGE_SIGNATURES: dict[Encoding, bytes] = {
    Encoding.JPEG: b"\xff\xd8\xff",
    Encoding.PNG: b"\x89PNG\r\n\x1a\n",
}


@dataclass(frozen=True)
class SensorMessage:
    """One decoded message: a chunk of samples or one camera frame.

    ``data`` is a read-only numpy array for raw payloads (shape ``(samples,
    channels)`` for continuous kinds, ``(height, width[, channels])`` for raw
    frames) and the compressed bytes for JPEG and PNG frames.
    """

    sensor_id: str
    kind: Kind
    seq: int  # per sensor, +1 per message; a jump is a gap, a step back a restart
    timestamp_ns: int  # Unix epoch ns (UTC) of the first sample, or of the frame's exposure
    data: np.ndarray | bytes
    sample_rate: float = 0.0
    encoding: Encoding = Encoding.RAW
    meta: dict[str, Any] = field(default_factory=dict)
    #: called once when the message is done with: its data produced its events into the outbox,
    #: or it was rejected or dropped and counted.  Sources that acknowledge input to the sender
    #: (MQTT QoS 1) set it; everywhere else it does nothing.  Not part of the wire format.
    ack: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)

    @property
    def samples(self) -> np.ndarray:
        """The raw array; only for raw payloads."""
        if not isinstance(self.data, np.ndarray):
            raise TypeError(f"{self.sensor_id}: payload is {self.encoding.name}, not raw samples")
        return self.data


def encode(message: SensorMessage) -> bytes:
    """Encode a message to wire bytes; raises WireError for what decode would reject."""
    _check_encodable(message)
    meta = _encode_meta(message.meta)
    if isinstance(message.data, np.ndarray):
        dtype = _dtype_code(message.data.dtype)
        shape = message.data.shape
        payload = np.ascontiguousarray(message.data, dtype=NUMPY_DTYPES[dtype]).tobytes()
    else:
        dtype, shape, payload = DType.NONE, (), bytes(message.data)
    if len(payload) > MAX_PAYLOAD_FIELD:
        raise WireError(f"payload of {len(payload)} bytes does not fit the 32-bit payload_len field")
    sensor = message.sensor_id.encode("ascii")
    head = HEADER.pack(
        MAGIC, VERSION, int(message.kind), int(message.encoding), int(dtype), message.seq,
        message.timestamp_ns, float(message.sample_rate), len(sensor), len(meta), len(shape),
        len(payload),
    )
    body = b"".join((head, struct.pack(f"<{len(shape)}I", *shape), sensor, meta, payload))
    encoded = body + CRC.pack(zlib.crc32(body))
    decode(encoded, max_payload=max(len(payload), DEFAULT_MAX_PAYLOAD))  # same rules both ways
    return encoded


def decode(buffer: bytes | bytearray | memoryview, max_payload: int = DEFAULT_MAX_PAYLOAD) -> SensorMessage:
    """Decode and validate wire bytes; raises WireError saying which field is wrong."""
    view = memoryview(buffer).cast("B")
    if len(view) < HEADER.size + CRC.size:
        raise WireError(f"message too short: {len(view)} bytes, the header alone is {HEADER.size}")
    (magic, version, kind_code, enc_code, dtype_code, seq, ts_ns, rate, sid_len, meta_len,
     ndim, payload_len) = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError(f"unsupported version {version}, this agent reads version {VERSION}")
    if any(view[RESERVED]):
        raise WireError(f"reserved header bytes {bytes(view[RESERVED]).hex()} must be zero")
    kind = _enum(Kind, kind_code, "kind")
    encoding = _enum(Encoding, enc_code, "encoding")
    dtype = _enum(DType, dtype_code, "dtype")
    if ndim > MAX_NDIM:
        raise WireError(f"ndim {ndim} exceeds {MAX_NDIM}")
    if payload_len > max_payload:
        raise WireError(f"payload of {payload_len} bytes exceeds the limit of {max_payload}")
    expected = HEADER.size + 4 * ndim + sid_len + meta_len + payload_len + CRC.size
    if len(view) != expected:
        raise WireError(f"length {len(view)} does not match the header, which implies {expected}")
    (crc,) = CRC.unpack_from(view, expected - CRC.size)
    if zlib.crc32(view[: expected - CRC.size]) != crc:
        raise WireError("crc32 mismatch: the message was corrupted")
    offset = HEADER.size
    shape = SHAPES[ndim].unpack_from(view, offset)
    offset += 4 * ndim
    sensor_id = _sensor_id(bytes(view[offset : offset + sid_len]))
    offset += sid_len
    meta = _meta(bytes(view[offset : offset + meta_len]))
    offset += meta_len
    payload = view[offset : offset + payload_len]
    try:
        if ts_ns <= 0:
            raise WireError(f"timestamp_ns must be positive, got {ts_ns}")
        _check_rate(kind, rate)
        data = _payload(kind, encoding, dtype, shape, payload)
    except WireError as error:
        raise SensorWireError(str(error), sensor_id, seq, ts_ns) from None
    if isinstance(data, np.ndarray) and not view.readonly:
        data = data.copy()  # never alias a buffer the caller may reuse (bytearray, zmq frames)
    if isinstance(data, np.ndarray):
        data.flags.writeable = False
    return SensorMessage(sensor_id, kind, seq, ts_ns, data, rate, encoding, meta)


def check_sensor_id(sensor_id: str) -> str:
    """Validate a sensor id (also used as an MQTT topic level)."""
    if not isinstance(sensor_id, str) or not SENSOR_ID_PATTERN.fullmatch(sensor_id):
        raise WireError(
            f"sensor id {sensor_id!r} must be 1-{MAX_SENSOR_ID} characters of A-Z a-z 0-9 _ . -"
        )
    return sensor_id


def _check_encodable(message: SensorMessage) -> None:
    """Range checks for fields that struct.pack would otherwise reject with a non-WireError."""
    check_sensor_id(message.sensor_id)
    if not 0 <= message.seq <= MAX_SEQ:
        raise WireError(f"seq must be in [0, 2**64), got {message.seq}")
    if not 0 < message.timestamp_ns <= MAX_TIMESTAMP_NS:
        raise WireError(f"timestamp_ns must be positive and fit int64, got {message.timestamp_ns}")


def _encode_meta(meta: dict[str, Any]) -> bytes:
    if not meta:
        return b""
    try:
        raw = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as error:
        raise WireError(f"meta is not JSON-serialisable: {error}") from None
    if len(raw) > MAX_META:
        raise WireError(f"meta of {len(raw)} bytes exceeds {MAX_META}")
    return raw


def _enum(enum_type: type[enum.IntEnum], code: int, name: str) -> Any:
    member = _MEMBERS[enum_type].get(code)  # a dict lookup: decode is on every message's path
    if member is None:
        allowed = ", ".join(f"{m.value}={m.name.lower()}" for m in enum_type)
        raise WireError(f"unknown {name} code {code} (allowed: {allowed})")
    return member


_MEMBERS: dict[type[enum.IntEnum], dict[int, enum.IntEnum]] = {
    enum_type: {member.value: member for member in enum_type} for enum_type in (Kind, Encoding, DType)
}


def _dtype_code(dtype: np.dtype[Any]) -> DType:
    for code, candidate in NUMPY_DTYPES.items():
        if dtype.kind == candidate.kind and dtype.itemsize == candidate.itemsize:
            return code
    raise WireError(f"numpy dtype {dtype} has no wire code")


def _sensor_id(raw: bytes) -> str:
    known = _KNOWN_SENSOR_IDS.get(raw)  # a plant has a fixed set of sensors: validate each id once
    if known is not None:
        return known
    try:
        sensor_id = check_sensor_id(raw.decode("ascii"))
    except UnicodeDecodeError:
        raise WireError(f"sensor id {raw!r} is not ASCII") from None
    if len(_KNOWN_SENSOR_IDS) < 65_536:
        _KNOWN_SENSOR_IDS[raw] = sensor_id
    return sensor_id


_KNOWN_SENSOR_IDS: dict[bytes, str] = {}


def _meta(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if len(raw) > MAX_META:
        raise WireError(f"meta of {len(raw)} bytes exceeds {MAX_META}")
    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as error:
        raise WireError(f"meta is not UTF-8 JSON: {error}") from None
    except RecursionError:
        raise WireError(f"meta is nested too deeply (more than {MAX_META_DEPTH} levels)") from None
    if not isinstance(meta, dict):
        raise WireError(f"meta must be a JSON object, got {type(meta).__name__}")
    if _depth(meta) > MAX_META_DEPTH:
        raise WireError(f"meta is nested too deeply (more than {MAX_META_DEPTH} levels)")
    return meta


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON; other languages would choke.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999, which could not be encoded again
        raise ValueError(f"number {text} overflows a double")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins, so the format forbids duplicates.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_rate(kind: Kind, rate: float) -> None:
    if kind.continuous:
        low, high = SAMPLE_RATE_BOUNDS[kind]
        if not low <= rate <= high:  # also false for NaN
            raise WireError(f"sample_rate must be in [{low:g}, {high:g}] Hz for {kind.name.lower()}, got {rate}")
    elif rate != 0:
        raise WireError(f"sample_rate must be 0 for frames, got {rate}")


def _payload(kind: Kind, encoding: Encoding, dtype: DType, shape: tuple[int, ...],
             payload: memoryview) -> np.ndarray | bytes:
    if encoding is not Encoding.RAW:
        if kind is not Kind.FRAME:
            raise WireError(f"{kind.name.lower()} payloads must be raw, got {encoding.name.lower()}")
        if dtype is not DType.NONE or shape:
            raise WireError("compressed frames carry dtype 0 and ndim 0")
        if not payload:
            raise WireError("empty image payload")
        signature = IMAGE_SIGNATURES[encoding]
        if bytes(payload[: len(signature)]) != signature:
            raise WireError(f"{encoding.name.lower()} payload must start with {signature.hex()}, "
                            f"got {bytes(payload[: len(signature)]).hex()}")
        return bytes(payload)
    if dtype not in ALLOWED_DTYPES[kind]:
        allowed = sorted(d.name.lower() for d in ALLOWED_DTYPES[kind])
        raise WireError(f"dtype {dtype.name.lower()} not allowed for {kind.name.lower()} "
                        f"(allowed: {allowed})")
    _check_shape(kind, shape)
    np_dtype = NUMPY_DTYPES[dtype]
    if len(payload) != math.prod(shape) * np_dtype.itemsize:
        raise WireError(
            f"payload is {len(payload)} bytes but shape {shape} of {dtype.name.lower()} needs "
            f"{math.prod(shape) * np_dtype.itemsize}"
        )
    array = np.frombuffer(payload, dtype=np_dtype).reshape(shape)
    if np_dtype.kind == "f" and not _all_finite(array):
        raise WireError("samples contain NaN or Inf")
    return array


def _all_finite(array: np.ndarray) -> bool:
    if array.size <= 4096:  # small: the element-wise check is cheaper than setting up errstate
        return bool(np.isfinite(array).all())
    # a float64 sum is finite iff every sample is, unless float64 samples near the limit overflow it;
    # only then is the slower element-wise check needed
    with np.errstate(all="ignore"):
        total = array.sum(dtype=np.float64)
    return math.isfinite(total) or bool(np.isfinite(array).all())


def _check_shape(kind: Kind, shape: tuple[int, ...]) -> None:
    if kind.continuous:
        if len(shape) != 2 or shape[0] < 1 or not 1 <= shape[1] <= MAX_CHANNELS:
            raise WireError(f"{kind.name.lower()} shape must be (samples>=1, channels 1-{MAX_CHANNELS}), "
                            f"got {shape}")
    elif len(shape) not in (2, 3) or min(shape[:2]) < 1 or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise WireError(f"raw frame shape must be (height, width[, 1|3|4]), got {shape}")
