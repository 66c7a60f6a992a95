"""The encrypted face gallery: enrol, match, remove, and every way its key or file can be wrong."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.faces.runtime.gallery import (
    GALLERY_FILE,
    KEY_ENVIRONMENT,
    EmptyGalleryError,
    Gallery,
    GalleryDecryptError,
    GalleryError,
    GalleryKeyError,
    load_key,
    new_key,
    write_key_file,
)
from sensors.errors import EdgeAgentError, StateError

DIMENSION = 16


def _person(rng: np.random.Generator) -> np.ndarray:
    centre = rng.normal(size=DIMENSION)
    return centre / np.linalg.norm(centre)


def _views(centre: np.ndarray, rng: np.random.Generator, count: int = 4, noise: float = 0.1) -> np.ndarray:
    return centre + rng.normal(scale=noise, size=(count, centre.size))


@pytest.fixture
def key() -> bytes:
    return base64.b64decode(new_key())


def test_enrolled_people_are_matched_and_a_stranger_is_not(tmp_path: Path, key: bytes) -> None:
    rng = np.random.default_rng(0)
    alice, bob, stranger = _person(rng), _person(rng), _person(rng)
    gallery = Gallery(tmp_path, key, threshold=0.6)
    gallery.enrol("Alice", _views(alice, rng))
    gallery.enrol("Bob", _views(bob, rng))
    assert gallery.names() == ["Alice", "Bob"]
    name, similarity = gallery.match(_views(alice, rng, count=1)[0])
    assert name == "Alice" and similarity > 0.8
    assert Gallery(tmp_path, key, threshold=0.6).match(bob)[0] == "Bob"  # read back from the file
    name, best = gallery.match(stranger)
    assert name is None and best < 0.6


def test_enrolling_again_adds_views_and_keeps_the_first_time(tmp_path: Path, key: bytes) -> None:
    rng = np.random.default_rng(1)
    alice = _person(rng)
    gallery = Gallery(tmp_path, key)
    gallery.enrol("Alice", _views(alice, rng, count=2), now=100.0)
    again = gallery.enrol("Alice", _views(alice, rng, count=3), now=200.0)
    assert again.embeddings.shape == (5, DIMENSION) and again.enrolled == 100.0
    np.testing.assert_allclose(np.linalg.norm(again.embeddings, axis=1), 1.0)


def test_the_file_holds_no_plaintext_name_or_embedding(tmp_path: Path, key: bytes) -> None:
    rng = np.random.default_rng(2)
    embeddings = _views(_person(rng), rng)
    Gallery(tmp_path, key).enrol("Zoë Quartermain", embeddings)
    blob = (tmp_path / GALLERY_FILE).read_bytes()
    assert "Zoë Quartermain".encode() not in blob and b"Quartermain" not in blob
    assert b"embeddings" not in blob and b"enrolled" not in blob
    assert repr(float(embeddings[0, 0] / np.linalg.norm(embeddings[0]))).encode() not in blob


def test_removing_a_person_leaves_no_trace_in_the_directory(tmp_path: Path, key: bytes) -> None:
    rng = np.random.default_rng(3)
    gallery = Gallery(tmp_path, key)
    gallery.enrol("Alice", _views(_person(rng), rng))
    gallery.enrol("Bob", _views(_person(rng), rng))
    before = (tmp_path / GALLERY_FILE).read_bytes()
    gallery.remove("Alice")
    assert gallery.names() == ["Bob"]
    after = (tmp_path / GALLERY_FILE).read_bytes()
    assert after != before and before[8:40] not in after  # rewritten with a fresh nonce, not appended to
    assert sorted(path.name for path in tmp_path.iterdir()) == [".gallery.lock", GALLERY_FILE]  # no temporaries
    with pytest.raises(GalleryError, match="no one named 'Alice'"):
        gallery.remove("Alice")


def test_a_wrong_key_is_a_clear_error(tmp_path: Path, key: bytes) -> None:
    Gallery(tmp_path, key).enrol("Alice", np.ones((1, DIMENSION)))
    other = base64.b64decode(new_key())
    wrong_key = r"cannot decrypt the gallery .*: wrong key or damaged file"
    with pytest.raises(GalleryDecryptError, match=wrong_key) as caught:
        Gallery(tmp_path, other).names()
    assert isinstance(caught.value, StateError) and isinstance(caught.value, EdgeAgentError)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda blob: blob[:30], "truncated"),
    (lambda blob: blob[:-1], "wrong key or damaged file"),
    (lambda blob: blob[:50] + bytes([blob[50] ^ 1]) + blob[51:], "wrong key or damaged file"),
    (lambda blob: b"{" + blob[1:], "not a face gallery"),
])
def test_a_damaged_or_truncated_file_is_a_clear_error(tmp_path: Path, key: bytes, damage: Callable[[bytes], bytes],
                                                     message: str) -> None:
    Gallery(tmp_path, key).enrol("Alice", np.ones((2, DIMENSION)))
    path = tmp_path / GALLERY_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GalleryDecryptError, match=message):
        Gallery(tmp_path, key).match(np.ones(DIMENSION))


def test_an_empty_gallery_cannot_match(tmp_path: Path, key: bytes) -> None:
    gallery = Gallery(tmp_path, key)
    with pytest.raises(EmptyGalleryError, match="nobody is enrolled"):
        gallery.match(np.ones(DIMENSION))
    gallery.enrol("Alice", np.ones((1, DIMENSION)))
    gallery.remove("Alice")
    with pytest.raises(EmptyGalleryError):
        gallery.match(np.ones(DIMENSION))


def test_an_embedding_of_another_dimension_is_refused(tmp_path: Path, key: bytes) -> None:
    gallery = Gallery(tmp_path, key)
    gallery.enrol("Alice", np.ones((1, DIMENSION)))
    with pytest.raises(GalleryError, match="dimension"):
        gallery.enrol("Bob", np.ones((1, DIMENSION + 1)))


def test_the_key_comes_from_the_file_before_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "faces.key"
    write_key_file(key_file)
    assert key_file.stat().st_mode & 0o077 == 0
    from_file = load_key(key_file, environ={KEY_ENVIRONMENT: new_key()})
    assert len(from_file) == 32 and from_file == base64.b64decode(key_file.read_text())
    environment_key = new_key()
    assert load_key(None, environ={KEY_ENVIRONMENT: environment_key}) == base64.b64decode(environment_key)
    with pytest.raises(GalleryKeyError, match="exists already"):
        write_key_file(key_file)


@pytest.mark.parametrize(("content", "message"), [
    (None, "no gallery key"),
    ("not base64 at all!", "not base64"),
    (base64.b64encode(b"short").decode(), "5 bytes; it must be 32"),
])
def test_a_missing_or_malformed_key_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    environ = {} if content is None else {KEY_ENVIRONMENT: content}
    with pytest.raises(GalleryKeyError, match=message):
        load_key(None, environ=environ)


def test_an_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GalleryKeyError, match="cannot read the gallery key file"):
        load_key(tmp_path / "absent.key", environ={})
