"""The enrolled faces at rest: names, embeddings and enrolment times in one AES-GCM encrypted file."""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensors.errors import StateError

GALLERY_FILE = "gallery.enc"
KEY_ENVIRONMENT = "EDGE_AGENT_FACES_KEY"
KEY_BYTES = 32  # AES-256
MAGIC = b"EAFACES1"  # also the AES-GCM associated data, so a file of another format never decrypts
NONCE_BYTES = 12
TAG_BYTES = 16
#: the shipped embedder's threshold at 1 % false matches (models/faces/manifest.yaml)
DEFAULT_THRESHOLD = 0.3973


class GalleryError(StateError):
    """A gallery that cannot be used: no key, a wrong key, a damaged file, nobody enrolled, an unknown name."""


class GalleryKeyError(GalleryError):
    """The key is missing or not 32 base64-encoded bytes."""


class GalleryDecryptError(GalleryError):
    """The file does not decrypt with this key (a wrong key, or a damaged or truncated file)."""


class EmptyGalleryError(GalleryError):
    """Nobody is enrolled, so there is nothing to match against."""


def new_key() -> str:
    """A fresh random key, base64 text (what the key file or the environment variable holds)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def write_key_file(path: Path) -> None:
    """Create a key file readable by its owner only; an existing one is never overwritten (its gallery would
    become unreadable)."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise GalleryKeyError(f"{path} exists already; a new key would make its gallery unreadable") from error
    with os.fdopen(handle, "w") as file:
        file.write(new_key() + "\n")


def load_key(key_file: Path | None = None, environ: Mapping[str, str] | None = None) -> bytes:
    """The 32-byte key from ``key_file``, else from the ``EDGE_AGENT_FACES_KEY`` environment variable."""
    environ = os.environ if environ is None else environ
    if key_file is not None:
        try:
            text, source = Path(key_file).read_text().strip(), str(key_file)
        except OSError as error:
            raise GalleryKeyError(f"cannot read the gallery key file {key_file}: {error.strerror}") from error
    elif environ.get(KEY_ENVIRONMENT):
        text, source = environ[KEY_ENVIRONMENT].strip(), KEY_ENVIRONMENT
    else:
        raise GalleryKeyError(f"no gallery key: give a key file or set {KEY_ENVIRONMENT} "
                              "(32 random bytes, base64; `edge-agent faces new-key` makes one)")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise GalleryKeyError(f"the gallery key in {source} is not base64") from error
    if len(key) != KEY_BYTES:
        raise GalleryKeyError(f"the gallery key in {source} is {len(key)} bytes; it must be {KEY_BYTES}")
    return key


@dataclass
class Identity:
    """One enrolled person: their L2-normalised embeddings and when they were first enrolled (Unix seconds)."""

    name: str
    embeddings: np.ndarray
    enrolled: float

    def mean_embedding(self) -> np.ndarray:
        mean = self.embeddings.mean(axis=0)
        return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12))


def _normalised(embeddings: np.ndarray) -> np.ndarray:
    array = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise GalleryError(f"embeddings must be a non-empty (count, dimension) array, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.all(np.isfinite(array)) or np.any(norms == 0):
        raise GalleryError("an embedding is zero or not finite")
    return np.asarray(array / norms)


class Gallery:
    """The gallery file ``<directory>/gallery.enc``; every change rewrites it whole, atomically, under a lock."""

    def __init__(self, directory: Path, key: bytes, threshold: float = DEFAULT_THRESHOLD) -> None:
        if len(key) != KEY_BYTES:
            raise GalleryKeyError(f"the gallery key is {len(key)} bytes; it must be {KEY_BYTES}")
        self.directory = Path(directory)
        self.path = self.directory / GALLERY_FILE
        self.threshold = threshold
        self._key = key

    # --- reading and writing the file -------------------------------------------------------------------

    def load(self) -> dict[str, Identity]:
        """Everyone enrolled, by name; an absent file is an empty gallery."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise GalleryError(f"cannot read the gallery {self.path}: {error.strerror}") from error
        return _decode(self._decrypt(blob))

    def _decrypt(self, blob: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not blob.startswith(MAGIC):
            raise GalleryDecryptError(f"{self.path} is not a face gallery (damaged, or another file)")
        if len(blob) < len(MAGIC) + NONCE_BYTES + TAG_BYTES:
            raise GalleryDecryptError(f"the gallery {self.path} is truncated")
        nonce = blob[len(MAGIC):len(MAGIC) + NONCE_BYTES]
        try:
            return AESGCM(self._key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES:], MAGIC)
        except InvalidTag as error:
            # GCM cannot tell the two apart: both mean the authentication tag does not match
            raise GalleryDecryptError(f"cannot decrypt the gallery {self.path}: wrong key or damaged file") from error

    def _save(self, identities: dict[str, Identity]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(NONCE_BYTES)  # never reuse a nonce under one key: a fresh one per write
        blob = MAGIC + nonce + AESGCM(self._key).encrypt(nonce, _encode(identities), MAGIC)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".gallery.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(blob)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Identity]]:
        """Load, let the caller change, save: under a lock so two commands never lose each other's changes."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.directory / ".gallery.lock", "w")  # noqa: SIM115 - held for the whole block
        except OSError as error:
            raise GalleryError(f"cannot write the gallery in {self.directory}: {error.strerror}") from error
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in self.directory.glob(".gallery.*.tmp"):  # left by a write killed mid-way: an old copy
                stale.unlink(missing_ok=True)
            identities = self.load()
            yield identities
            self._save(identities)

    # --- what the commands and the task use -------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self.load())

    def enrol(self, name: str, embeddings: np.ndarray, now: float | None = None) -> Identity:
        """Add ``embeddings`` to ``name`` (enrolling them if new); all must have the gallery's dimension."""
        name = name.strip()
        if not name:
            raise GalleryError("a name must not be empty")
        vectors = _normalised(embeddings)
        with self._changing() as identities:
            dimensions = {identity.embeddings.shape[1] for identity in identities.values()}
            if dimensions and vectors.shape[1] not in dimensions:
                raise GalleryError(f"embeddings of dimension {vectors.shape[1]} do not fit a gallery of "
                                   f"dimension {dimensions.pop()} (another model?)")
            known = identities.get(name)
            if known is None:
                identities[name] = Identity(name, vectors, time.time() if now is None else now)
            else:
                known.embeddings = np.vstack([known.embeddings, vectors])
            return identities[name]

    def remove(self, name: str) -> None:
        """Forget ``name`` completely: the file is rewritten without them (old ciphertext replaced, not kept)."""
        with self._changing() as identities:
            if name not in identities:
                known = ", ".join(sorted(identities)) or "nobody"
                raise GalleryError(f"no one named {name!r} in the gallery (enrolled: {known})")
            del identities[name]

    def match(self, embedding: np.ndarray) -> tuple[str | None, float]:
        """The enrolled name most similar (cosine to their mean embedding) and the similarity; the name is None
        when even the best is under the threshold."""
        identities = self.load()
        if not identities:
            raise EmptyGalleryError(f"nobody is enrolled in the gallery {self.path}")
        closest, similarity = closest_identity(identities, embedding)
        return (closest if similarity >= self.threshold else None), similarity


def closest_identity(identities: Mapping[str, Identity], embedding: np.ndarray) -> tuple[str, float]:
    """The enrolled name whose mean embedding is most similar (cosine) to ``embedding``, and the similarity."""
    probe = _normalised(embedding)[0]
    scores = {name: float(identity.mean_embedding() @ probe) for name, identity in identities.items()
              if identity.embeddings.shape[1] == probe.shape[0]}
    if not scores:
        raise GalleryError(f"an embedding of dimension {probe.shape[0]} fits nobody in this gallery")
    best = max(scores, key=lambda name: scores[name])
    return best, scores[best]


class LiveGallery:
    """The gallery as a running task sees it: read once, read again when the file changes (``faces enrol`` or
    ``remove`` while the agent runs); a file that cannot be read then leaves the last good copy in use."""

    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery
        self.identities: dict[str, Identity] = gallery.load()
        self._stamp = self._file_stamp()
        self.failed_reloads = 0

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.gallery.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def refresh(self) -> str | None:
        """Re-read the file if it changed; the reason when that failed (the previous identities stay)."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            self.identities = self.gallery.load()
        except GalleryError as error:
            self.failed_reloads += 1
            return str(error)
        return None

    def match(self, embedding: np.ndarray) -> tuple[str | None, float | None]:
        """(the closest name, its similarity), or (None, None) when nobody is enrolled."""
        if not self.identities:
            return None, None
        return closest_identity(self.identities, embedding)


def _encode(identities: dict[str, Identity]) -> bytes:
    return json.dumps({"version": 1, "identities": [
        {"name": identity.name, "enrolled": identity.enrolled, "embeddings": identity.embeddings.tolist()}
        for identity in identities.values()]}).encode("utf-8")


def _decode(plaintext: bytes) -> dict[str, Identity]:
    try:
        document = json.loads(plaintext)
        return {item["name"]: Identity(str(item["name"]), np.asarray(item["embeddings"], dtype=np.float64),
                                       float(item["enrolled"]))
                for item in document["identities"]}
    except (ValueError, KeyError, TypeError) as error:
        raise GalleryDecryptError("the gallery decrypts but its content is not a gallery (damaged)") from error
