"""Tests for the sensor wire format (sensors/wire.py) and its documentation (docs/wire-format.md)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from agent.testing import Subscriber
from sensors.topics import DEFAULT_PREFIX, sensor_topic
from sensors.wire import (
    ALLOWED_DTYPES,
    DEFAULT_MAX_PAYLOAD,
    MAX_CHANNELS,
    MAX_META,
    NUMPY_DTYPES,
    SAMPLE_RATE_BOUNDS,
    DType,
    Encoding,
    Kind,
    SensorMessage,
    SensorWireError,
    WireError,
    decode,
    encode,
)
from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "wire-format.md"
TS = 1_764_403_200_000_000_000  # 2025-11-29T08:00:00Z
# The layout as docs/wire-format.md states it, written independently of sensors/wire.py.
DOC_HEADER = struct.Struct("<4sBBBBQqdHHB3sI")
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(*, magic: bytes = b"EAGW", version: int = 1, kind: int = 1, encoding: int = 1, dtype: int = 4,
          seq: int = 0, ts: int = TS, rate: float = 1000.0, sensor: bytes = b"pump-1", meta: bytes = b"",
          shape: tuple[int, ...] = (4, 2), payload: bytes | None = None, reserved: bytes = b"\0\0\0",
          ndim: int | None = None, sid_len: int | None = None, payload_len: int | None = None) -> bytes:
    """Wire bytes from raw field values, with a correct CRC, for crafting invalid messages."""
    if payload is None:
        payload = np.zeros(shape, "<f4").tobytes()
    head = DOC_HEADER.pack(
        magic, version, kind, encoding, dtype, seq, ts, rate,
        len(sensor) if sid_len is None else sid_len, len(meta), len(shape) if ndim is None else ndim,
        reserved, len(payload) if payload_len is None else payload_len,
    )
    body = head + struct.pack(f"<{len(shape)}I", *shape) + sensor + meta + payload
    return body + struct.pack("<I", zlib.crc32(body))


def resign(buffer: bytes) -> bytes:
    """The same bytes with the trailing CRC recomputed, so that later checks are reached."""
    return buffer[:-4] + struct.pack("<I", zlib.crc32(buffer[:-4]))


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (6, 4), (200, 30, 10)).save(out, fmt)
    return out.getvalue()


def vibration(samples: np.ndarray | None = None, **fields: Any) -> SensorMessage:
    data = np.arange(8, dtype=np.float32).reshape(4, 2) if samples is None else samples
    values: dict[str, Any] = {"sensor_id": "pump-1", "kind": Kind.VIBRATION, "seq": 7, "timestamp_ns": TS,
                              "data": data, "sample_rate": 1000.0}
    values.update(fields)
    return SensorMessage(**values)


def assert_same(left: SensorMessage, right: SensorMessage) -> None:
    assert (left.sensor_id, left.kind, left.seq, left.timestamp_ns, left.sample_rate, left.encoding,
            left.meta) == (right.sensor_id, right.kind, right.seq, right.timestamp_ns, right.sample_rate,
                           right.encoding, right.meta)
    if isinstance(left.data, np.ndarray):
        assert isinstance(right.data, np.ndarray)
        assert right.data.shape == left.data.shape
        np.testing.assert_array_equal(right.data, left.data)
    else:
        assert right.data == left.data


RAW_CASES = [(kind, dtype) for kind in (Kind.VIBRATION, Kind.AUDIO) for dtype in sorted(ALLOWED_DTYPES[kind])]
FLOAT_CASES = [(kind, dtype) for kind, dtype in RAW_CASES if NUMPY_DTYPES[dtype].kind == "f"]


class TestRoundTrip:
    """encode followed by decode gives back the same message for every kind, dtype and encoding."""

    @pytest.mark.parametrize(("kind", "dtype"), RAW_CASES, ids=lambda v: v.name.lower())
    def test_continuous_dtypes(self, kind: Kind, dtype: DType) -> None:
        """Every dtype allowed for a continuous kind round-trips with its values and dtype."""
        data = (np.arange(30).reshape(10, 3) - 15).astype(NUMPY_DTYPES[dtype])
        message = vibration(data, kind=kind, sample_rate=48_000.0)
        decoded = decode(encode(message))
        assert_same(message, decoded)
        assert isinstance(decoded.data, np.ndarray) and decoded.data.dtype == NUMPY_DTYPES[dtype]

    @pytest.mark.parametrize("shape", [(4, 6), (4, 6, 1), (4, 6, 3), (4, 6, 4)])
    def test_raw_frames(self, shape: tuple[int, ...]) -> None:
        """Raw uint8 frames of (h, w) and (h, w, 1|3|4) round-trip."""
        pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        message = SensorMessage("cam-1", Kind.FRAME, 1, TS, pixels, meta={"part_id": "P-000123"})
        assert_same(message, decode(encode(message)))

    @pytest.mark.parametrize(("encoding", "fmt"), [(Encoding.JPEG, "JPEG"), (Encoding.PNG, "PNG")])
    def test_compressed_frames(self, encoding: Encoding, fmt: str) -> None:
        """JPEG and PNG frames round-trip as the exact compressed bytes."""
        message = SensorMessage("cam-1", Kind.FRAME, 2, TS, image_bytes(fmt), encoding=encoding,
                                meta={"part_id": "P-000123"})
        assert_same(message, decode(encode(message)))

    def test_big_endian_input_is_encoded_little_endian(self) -> None:
        """A big-endian float32 array is sent as little-endian float32 with the same values."""
        data = np.arange(6, dtype=">f4").reshape(3, 2)
        decoded = decode(encode(vibration(data)))
        assert decoded.samples.dtype == np.dtype("<f4")
        np.testing.assert_array_equal(decoded.samples, data)

    def test_decoded_samples_are_read_only(self) -> None:
        """Decoded arrays cannot be written to, whatever buffer they came from."""
        for buffer in (encode(vibration()), bytearray(encode(vibration()))):
            with pytest.raises(ValueError):
                decode(buffer).samples[0, 0] = 1.0

    def test_mutable_buffer_is_not_aliased(self) -> None:
        """Reusing a bytearray after decode does not change the decoded samples."""
        buffer = bytearray(encode(vibration()))
        decoded = decode(buffer)
        buffer[:] = bytes(len(buffer))
        np.testing.assert_array_equal(decoded.samples, np.arange(8, dtype=np.float32).reshape(4, 2))

    def test_layout_matches_the_document(self) -> None:
        """encode writes exactly the bytes the documented layout describes."""
        data = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
        message = vibration(data, meta={"unit": "g"})
        expected = build(seq=7, sensor=b"pump-1", meta=b'{"unit":"g"}', shape=(2, 2), payload=data.tobytes())
        assert encode(message) == expected


def rejects(buffer: bytes, pattern: str, **kwargs: Any) -> None:
    with pytest.raises(WireError, match=pattern):
        decode(buffer, **kwargs)


class TestDecodeRejects:
    """decode rejects each broken rule with a WireError that names the field."""

    def test_too_short(self) -> None:
        """A buffer shorter than header plus CRC is rejected as too short."""
        rejects(build()[:47], "too short")

    def test_magic(self) -> None:
        """Anything but EAGW in the first four bytes is rejected."""
        rejects(build(magic=b"EAGX"), "magic")

    def test_version(self) -> None:
        """A version other than 1 is rejected."""
        rejects(build(version=2), "version")

    def test_reserved(self) -> None:
        """Non-zero reserved header bytes are rejected."""
        rejects(build(reserved=b"\0\1\0"), "reserved")

    @pytest.mark.parametrize(("field", "value"), [("kind", 0), ("kind", 4), ("encoding", 0), ("encoding", 4),
                                                  ("dtype", 6)])
    def test_unknown_codes(self, field: str, value: int) -> None:
        """Unknown kind, encoding and dtype codes are rejected."""
        fields: dict[str, Any] = {field: value}
        rejects(build(**fields), f"unknown {field} code {value}")

    def test_ndim(self) -> None:
        """More than four dimensions are rejected."""
        rejects(build(shape=(1, 1, 1, 1, 1), payload=b"\0" * 4), "ndim 5")

    def test_max_payload(self) -> None:
        """A payload larger than max_payload is rejected before anything else is read."""
        rejects(build(), "payload of 32 bytes exceeds the limit of 31", max_payload=31)
        rejects(build(payload_len=DEFAULT_MAX_PAYLOAD + 1), "payload of .* exceeds")

    @pytest.mark.parametrize("change", ["truncated", "extended", "sid_len"])
    def test_length(self, change: str) -> None:
        """A buffer whose length disagrees with the header's length fields is rejected."""
        buffer = {"truncated": build()[:-1], "extended": build() + b"\0",
                  "sid_len": build(sid_len=7)}[change]
        rejects(buffer, "length")

    def test_crc(self) -> None:
        """A flipped payload bit is caught by the CRC."""
        buffer = bytearray(build())
        buffer[60] ^= 0x10
        rejects(bytes(buffer), "crc32")

    @pytest.mark.parametrize("sensor", [b"", b"pump 1", b"pump/1", b"p+", b"#", b"x" * 65, b"pump-1\n",
                                        "pümpe".encode()])
    def test_sensor_id(self, sensor: bytes) -> None:
        """Empty, too long, non-ASCII ids and ids with other characters than A-Za-z0-9_.- are rejected."""
        rejects(build(sensor=sensor), "sensor id")

    @pytest.mark.parametrize(("meta", "reason"), [
        (b"\xff", "UTF-8"), (b"{", "JSON"), (b"[1]", "JSON object"), (b'{"a":NaN}', "NaN"),
        (b'{"a":Infinity}', "Infinity"), (b'{"a":1e999}', "overflows"), (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),
        (json.dumps({"a": "x" * MAX_META}).encode(), "exceeds 4096"),
    ])
    def test_meta(self, meta: bytes, reason: str) -> None:
        """Meta must be at most 4096 bytes of strict UTF-8 JSON holding one object with unique keys."""
        rejects(build(meta=meta), f"meta.*{reason}")

    def test_meta_depth_limit_is_inclusive(self) -> None:
        """Sixteen levels of nesting are accepted, seventeen are not."""
        nested: list[Any] = []
        for _ in range(14):
            nested = [nested]
        assert decode(build(meta=json.dumps({"a": nested}).encode())).meta == {"a": nested}
        rejects(build(meta=json.dumps({"a": [nested]}).encode()), "more than 16 levels")

    @pytest.mark.parametrize("ts", [0, -1])
    def test_timestamp(self, ts: int) -> None:
        """Timestamps must be positive."""
        rejects(build(ts=ts), "timestamp_ns")

    @pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf, 5e-324, 0.999, 1e6 + 1, 1e7])
    def test_continuous_sample_rate(self, rate: float) -> None:
        """Vibration needs a sample rate in [1 Hz, 1 MHz]; 5e-324 Hz once overflowed the windowing."""
        rejects(build(rate=rate), "sample_rate")

    @pytest.mark.parametrize(("kind", "rate", "ok"), [(1, 1.0, True), (1, 1e6, True), (3, 384_000.0, True),
                                                      (3, 384_001.0, False), (3, 0.5, False)])
    def test_sample_rate_bounds_per_kind(self, kind: int, rate: float, ok: bool) -> None:
        """Audio stops at 384 kHz, vibration at 1 MHz; both start at 1 Hz (bounds inclusive)."""
        message = build(kind=kind, rate=rate)
        if ok:
            assert decode(message).sample_rate == rate
        else:
            rejects(message, "sample_rate")

    def test_a_payload_error_names_the_sensor(self) -> None:
        """NaN samples and bad rates are counted against the sensor: the error carries its id and seq."""
        with pytest.raises(SensorWireError) as caught:
            decode(build(rate=5e-324))
        assert caught.value.sensor_id and caught.value.seq == decode(build()).seq

    def test_frame_sample_rate(self) -> None:
        """Frames must carry sample rate 0."""
        rejects(build(kind=2, dtype=1, rate=30.0, shape=(2, 2), payload=b"\0" * 4), "sample_rate must be 0")

    def test_continuous_must_be_raw(self) -> None:
        """Vibration and audio payloads cannot be JPEG or PNG."""
        rejects(build(encoding=2, dtype=0, shape=(), payload=image_bytes("JPEG")), "must be raw")

    def test_compressed_frame_carries_no_dtype_or_shape(self) -> None:
        """A JPEG frame with a dtype or a shape is rejected."""
        jpeg = image_bytes("JPEG")
        rejects(build(kind=2, encoding=2, dtype=1, rate=0, shape=(), payload=jpeg), "dtype 0 and ndim 0")
        rejects(build(kind=2, encoding=2, dtype=0, rate=0, shape=(4, 6), payload=jpeg), "dtype 0 and ndim 0")

    def test_empty_image(self) -> None:
        """A compressed frame needs a non-empty payload."""
        rejects(build(kind=2, encoding=3, dtype=0, rate=0, shape=(), payload=b""), "empty image")

    @pytest.mark.parametrize(("encoding", "fmt"), [(2, "PNG"), (3, "JPEG")])
    def test_image_signature(self, encoding: int, fmt: str) -> None:
        """A PNG labelled JPEG (and the reverse) is rejected by its leading bytes."""
        rejects(build(kind=2, encoding=encoding, dtype=0, rate=0, shape=(), payload=image_bytes(fmt)),
                "payload must start with")

    @pytest.mark.parametrize(("kind", "dtype"), [(1, 1), (1, 0), (3, 5), (3, 3), (2, 4)])
    def test_dtype_for_kind(self, kind: int, dtype: int) -> None:
        """Each kind accepts only its dtypes: no uint8 vibration, no float64 audio, only uint8 frames."""
        rejects(build(kind=kind, dtype=dtype, rate=0 if kind == 2 else 1000.0, payload=b"\0" * 64),
                "dtype .* not allowed")

    @pytest.mark.parametrize("shape", [(8,), (2, 2, 2), (0, 2), (4, 0), (1, MAX_CHANNELS + 1)])
    def test_continuous_shape(self, shape: tuple[int, ...]) -> None:
        """Continuous payloads are (samples >= 1, channels 1-64)."""
        rejects(build(shape=shape, payload=b"\0" * 4 * math.prod(shape)), "shape must be")

    @pytest.mark.parametrize("shape", [(6,), (2, 2, 3, 1), (0, 4), (4, 0, 3), (2, 2, 2)])
    def test_frame_shape(self, shape: tuple[int, ...]) -> None:
        """Raw frames are (height, width) or (height, width, 1|3|4) with height and width >= 1."""
        rejects(build(kind=2, dtype=1, rate=0, shape=shape, payload=b"\0" * math.prod(shape)),
                "frame shape must be")

    def test_payload_size_matches_shape(self) -> None:
        """The payload must hold exactly prod(shape) elements of the dtype."""
        rejects(build(shape=(4, 2), payload=b"\0" * 28), "payload is 28 bytes but shape")

    @pytest.mark.parametrize(("dtype", "value"), [(4, math.nan), (4, math.inf), (5, -math.inf)])
    def test_not_finite(self, dtype: int, value: float) -> None:
        """Float samples must be finite."""
        samples = np.zeros((4, 2), NUMPY_DTYPES[DType(dtype)])
        samples[2, 1] = value
        rejects(build(dtype=dtype, payload=samples.tobytes()), "NaN or Inf")


class TestEncodeRejects:
    """encode refuses what decode would reject, always with a WireError naming the field."""

    @pytest.mark.parametrize(("fields", "pattern"), [
        ({"seq": -1}, "seq"), ({"seq": 2**64}, "seq"), ({"timestamp_ns": 0}, "timestamp_ns"),
        ({"timestamp_ns": 2**63}, "timestamp_ns"), ({"sensor_id": "a/b"}, "sensor id"),
        ({"sensor_id": 5}, "sensor id"), ({"meta": {"t": object()}}, "meta"),
        ({"meta": {"x": math.nan}}, "meta"), ({"meta": {"x": "y" * MAX_META}}, "meta"),
        ({"meta": {1: "a", "1": "b"}}, "duplicate key"),
        ({"sample_rate": 0.0}, "sample_rate"), ({"encoding": Encoding.JPEG}, "must be raw"),
    ])
    def test_bad_fields(self, fields: dict[str, Any], pattern: str) -> None:
        """Out-of-range header fields and unserialisable meta raise WireError, not struct.error."""
        with pytest.raises(WireError, match=pattern):
            encode(vibration(**fields))

    @pytest.mark.parametrize("dtype", ["bool", "u2", "i1", "f2", "c8"])
    def test_dtype_without_code(self, dtype: str) -> None:
        """numpy dtypes without a wire code are refused."""
        with pytest.raises(WireError, match="no wire code"):
            encode(vibration(np.zeros((4, 2), dtype)))

    @pytest.mark.parametrize("value", [math.nan, math.inf])
    def test_not_finite(self, value: float) -> None:
        """NaN and Inf samples cannot be encoded."""
        data = np.zeros((4, 2), np.float32)
        data[0, 0] = value
        with pytest.raises(WireError, match="NaN or Inf"):
            encode(vibration(data))

    def test_wrong_shape(self) -> None:
        """A 1-D vibration array is refused (it must be (samples, channels))."""
        with pytest.raises(WireError, match="shape must be"):
            encode(vibration(np.zeros(8, np.float32)))


# Strategies for valid messages.
sensor_ids = st.from_regex(r"\A[A-Za-z0-9_.\-]{1,64}\Z")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
metas = st.dictionaries(st.text(max_size=12), json_values, max_size=4)


@st.composite
def messages(draw: st.DrawFn) -> SensorMessage:
    kind = draw(st.sampled_from(list(Kind)))
    meta = draw(metas)
    sensor = draw(sensor_ids)
    seq = draw(st.integers(0, 2**64 - 1))
    ts = draw(st.integers(1, 2**63 - 1))
    if kind is Kind.FRAME:
        encoding = draw(st.sampled_from(list(Encoding)))
        if encoding is not Encoding.RAW:
            body = draw(st.binary(max_size=40))
            return SensorMessage(sensor, kind, seq, ts, IMAGE_HEADS[encoding] + body, 0.0, encoding, meta)
        channels = draw(st.sampled_from([(), (1,), (3,), (4,)]))
        shape = (draw(st.integers(1, 8)), draw(st.integers(1, 8)), *channels)
        data = draw(hnp.arrays(np.uint8, shape))
        return SensorMessage(sensor, kind, seq, ts, data, 0.0, encoding, meta)
    dtype = NUMPY_DTYPES[draw(st.sampled_from(sorted(ALLOWED_DTYPES[kind])))]
    shape = (draw(st.integers(1, 16)), draw(st.integers(1, MAX_CHANNELS)))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=False, allow_infinity=False, width=64 if dtype.itemsize == 8 else 32)
    data = draw(hnp.arrays(dtype, shape, elements=elements))
    rate = draw(st.floats(*SAMPLE_RATE_BOUNDS[kind]))
    return SensorMessage(sensor, kind, seq, ts, data, rate, Encoding.RAW, meta)


IMAGE_HEADS = {Encoding.JPEG: b"\xff\xd8\xff", Encoding.PNG: b"\x89PNG\r\n\x1a\n"}
VALID_PREFIX = build()[:8]


def decode_or_wire_error(buffer: bytes) -> SensorMessage | None:
    """decode's only allowed outcomes: a message that re-encodes to a decodable one, or WireError."""
    try:
        message = decode(buffer)
    except WireError:
        return None
    assert_same(message, decode(encode(message)))
    return message


class TestProperties:
    """Hypothesis: decode never fails with anything but WireError, and valid messages survive."""

    @PROPERTY_SETTINGS
    @given(st.binary(max_size=200))
    def test_random_bytes(self, buffer: bytes) -> None:
        """Arbitrary bytes raise WireError (or, in theory, decode to a valid message)."""
        decode_or_wire_error(buffer)

    @PROPERTY_SETTINGS
    @given(st.binary(min_size=40, max_size=200))
    def test_random_bytes_after_valid_magic(self, tail: bytes) -> None:
        """Random bytes behind a valid magic and version, with a valid CRC, get past the first checks."""
        decode_or_wire_error(resign(VALID_PREFIX + tail))

    @PROPERTY_SETTINGS
    @given(messages())
    def test_round_trip(self, message: SensorMessage) -> None:
        """Any valid message round-trips unchanged."""
        assert_same(message, decode(encode(message)))

    @PROPERTY_SETTINGS
    @given(messages(), st.data())
    def test_bit_flip_is_detected(self, message: SensorMessage, data: st.DataObject) -> None:
        """Flipping any single bit of a valid message always raises WireError."""
        buffer = bytearray(encode(message))
        bit = data.draw(st.integers(0, 8 * len(buffer) - 1))
        buffer[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WireError):
            decode(bytes(buffer))

    @PROPERTY_SETTINGS
    @given(messages(), st.data())
    def test_truncation_and_extension(self, message: SensorMessage, data: st.DataObject) -> None:
        """A valid message cut short or with bytes appended always raises WireError."""
        buffer = encode(message)
        cut = data.draw(st.integers(0, len(buffer) - 1))
        extra = data.draw(st.binary(min_size=1, max_size=16))
        for broken in (buffer[:cut], buffer + extra):
            with pytest.raises(WireError):
                decode(broken)

    @PROPERTY_SETTINGS
    @given(messages(), st.data())
    def test_mutation_with_valid_crc(self, message: SensorMessage, data: st.DataObject) -> None:
        """A byte changed, inserted or removed, CRC fixed up: WireError or a valid message, nothing else."""
        buffer = bytearray(encode(message)[:-4])
        position = data.draw(st.integers(0, len(buffer) - 1))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace":
            buffer[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            buffer.insert(position, data.draw(st.integers(0, 255)))
        else:
            del buffer[position]
        decode_or_wire_error(resign(bytes(buffer) + b"\0\0\0\0"))

    @PROPERTY_SETTINGS
    @given(messages(), st.integers(0, 64))
    def test_max_payload(self, message: SensorMessage, limit: int) -> None:
        """decode accepts a message exactly when its payload fits max_payload."""
        buffer = encode(message)
        size = len(message.data.tobytes() if isinstance(message.data, np.ndarray) else message.data)
        if size <= limit:
            assert_same(message, decode(buffer, max_payload=limit))
        else:
            with pytest.raises(WireError, match="exceeds the limit"):
                decode(buffer, max_payload=limit)

    @PROPERTY_SETTINGS
    @given(st.text(max_size=70).filter(lambda s: re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", s) is None))
    def test_bad_sensor_ids(self, sensor: str) -> None:
        """Any id outside the allowed alphabet or length is refused by encode and by decode."""
        with pytest.raises(WireError, match="sensor id"):
            encode(vibration(sensor_id=sensor))
        with pytest.raises(WireError, match="sensor id"):
            decode(build(sensor=sensor.encode("utf-8")[:200]))

    @PROPERTY_SETTINGS
    @given(st.binary(min_size=1, max_size=64))
    def test_bad_meta_bytes(self, meta: bytes) -> None:
        """Random meta bytes decode to a JSON object or raise WireError naming meta."""
        try:
            message = decode(build(meta=meta))
        except WireError as error:
            assert "meta" in str(error)
        else:
            assert isinstance(message.meta, dict)

    @PROPERTY_SETTINGS
    @given(st.sampled_from(FLOAT_CASES), st.sampled_from([math.nan, math.inf, -math.inf]), st.data())
    def test_nan_and_inf_anywhere(self, case: tuple[Kind, DType], value: float, data: st.DataObject) -> None:
        """A single NaN or Inf anywhere in a float payload is rejected."""
        kind, dtype = case
        samples = np.ones((5, 3), NUMPY_DTYPES[dtype])
        samples[data.draw(st.integers(0, 4)), data.draw(st.integers(0, 2))] = value
        with pytest.raises(WireError, match="NaN or Inf"):
            decode(build(kind=kind, dtype=dtype, shape=(5, 3), payload=samples.tobytes()))


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestDocumentation:
    """docs/wire-format.md stays exact: its examples are generated and its publisher code works."""

    def test_generated_examples_are_current(self) -> None:
        """Every generated block in the document equals what docs/wire_format_examples.py prints now."""
        examples = load_module(ROOT / "docs" / "wire_format_examples.py", "wire_format_examples")
        text = DOC.read_text()
        sections = examples.render()
        assert sections, "the generator produced nothing"
        for name, block in sections.items():
            assert examples.splice(text, name, block) == text, f"section {name!r} is stale: run the generator"

    @staticmethod
    def publisher_script(directory: Path) -> Path:
        code = re.search(r"```python\n(\"\"\"Publish.*?)```", DOC.read_text(), re.S)
        assert code, "publisher example not found"
        path = directory / "publisher.py"
        path.write_text(code.group(1))
        return path

    def test_publisher_example_bytes_decode(self, tmp_path: Path) -> None:
        """The plain-struct publisher in the document builds bytes that decode to what it meant."""
        publisher = load_module(self.publisher_script(tmp_path), "publisher_example")
        rows = [(0.5, -1.0, 0.25), (1.5, 2.0, -0.75)]
        message = decode(publisher.encode_vibration("pump-7", 41, TS, 25_600.0, rows))
        assert (message.sensor_id, message.kind, message.seq, message.timestamp_ns, message.sample_rate) == \
            ("pump-7", Kind.VIBRATION, 41, TS, 25_600.0)
        np.testing.assert_array_equal(message.samples, np.array(rows, np.float32))

    def test_publisher_example_over_mqtt(self, tmp_path: Path, broker: Broker) -> None:
        """Run as a program, the document's publisher delivers a continuous, decodable stream."""
        script = self.publisher_script(tmp_path)
        topic = sensor_topic(DEFAULT_PREFIX, Kind.VIBRATION, "pump-9")
        with Subscriber(broker.port, topic) as subscriber:
            subprocess.run([sys.executable, str(script), "127.0.0.1", str(broker.port), "pump-9", "0.2"],
                           check=True, timeout=30)
            received = subscriber.wait_for(2)
        decoded = [decode(payload) for _, payload in received]
        assert [m.seq for m in decoded] == [0, 1]
        assert all(m.samples.shape == (2560, 3) and m.sample_rate == 25_600.0 for m in decoded)
        assert decoded[1].timestamp_ns - decoded[0].timestamp_ns == 100_000_000
