"""Camera frame decoding for frame tasks: JPEG, PNG or raw uint8 pixels to a numpy image (Pillow, numpy).

Every way a frame can be unusable (not a frame, truncated or corrupt image data, a declared
encoding that does not match the bytes, an absurd size, an unsupported pixel layout) raises
:class:`RejectedInput` with a reason that names the sensor and says what was wrong.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from agent.tasks.base import RejectedInput
from sensors.wire import Encoding, Kind, SensorMessage

MAX_PIXELS = 40_000_000
FORMATS = {Encoding.JPEG: "JPEG", Encoding.PNG: "PNG"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def decode_frame(message: SensorMessage, mode: Literal["L", "RGB"] = "L", min_side: int = 16) -> np.ndarray:
    """The frame as a (H, W) grayscale or (H, W, 3) RGB uint8 array."""
    where = f"sensor {message.sensor_id} seq {message.seq}"
    if message.kind is not Kind.FRAME:
        raise RejectedInput(f"{where}: expected a camera frame, got {message.kind.name.lower()} data")
    if isinstance(message.data, np.ndarray):
        image = _from_raw(message.data, mode, where)
    else:
        image = _from_compressed(bytes(message.data), message.encoding, mode, where)
    if min(image.shape[:2]) < min_side:
        raise RejectedInput(f"{where}: frame {image.shape[1]}x{image.shape[0]} is smaller than {min_side} px")
    return image


def _from_raw(pixels: np.ndarray, mode: str, where: str) -> np.ndarray:
    if pixels.dtype != np.uint8:
        raise RejectedInput(f"{where}: raw frames must be uint8, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]  # alpha carries nothing the inspection can use
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels) if mode == "L" else np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        if mode == "RGB":
            return np.ascontiguousarray(pixels)
        return np.clip(pixels.astype(np.float32) @ LUMA + 0.5, 0, 255).astype(np.uint8)
    raise RejectedInput(f"{where}: raw frame shape {pixels.shape} is not (H, W), (H, W, 1|3|4)")


def _from_compressed(payload: bytes, encoding: Encoding, mode: str, where: str) -> np.ndarray:
    expected = FORMATS.get(encoding)
    try:
        with warnings.catch_warnings():
            # Pillow warns before it raises on oversized images; the size check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(payload), formats=list(FORMATS.values()))
        if image.format != expected:
            raise RejectedInput(f"{where}: declared {encoding.name.lower()} but the payload is {image.format}")
        if image.width * image.height > MAX_PIXELS:
            raise RejectedInput(f"{where}: image of {image.width}x{image.height} exceeds {MAX_PIXELS} pixels")
        image.load()
        converted = image.convert(mode)
    except RejectedInput:
        raise
    except UnidentifiedImageError:
        raise RejectedInput(f"{where}: payload is not a decodable {expected} image") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise RejectedInput(f"{where}: corrupt or truncated {expected} image: {error}") from None
    return np.asarray(converted, dtype=np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """A uint8 grayscale or RGB array as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
