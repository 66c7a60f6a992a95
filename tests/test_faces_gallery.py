"""The encrypted face gallery: enrol, match, remove, and every way its key or file can be wrong."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from models.faces.runtime.embedder import FaceEmbedder
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
from sensors.simulate.faces import render_face, sample_identities
from tests.cli_runner import cli, config_dict, fails_with

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


def test_a_copy_left_by_a_killed_write_is_deleted_by_the_next_change(tmp_path: Path, key: bytes) -> None:
    gallery = Gallery(tmp_path, key)
    gallery.enrol("Alice", np.ones((1, DIMENSION)))
    stale = tmp_path / ".gallery.abc123.tmp"
    stale.write_bytes((tmp_path / GALLERY_FILE).read_bytes())
    gallery.remove("Alice")
    assert not stale.exists()


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


# --- the edge-agent faces command ---------------------------------------------------------------------------


def _write_crops(folder: Path, identity_index: int, count: int, seed: int) -> list[Path]:
    identity = sample_identities(identity_index + 1, seed=11)[identity_index]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{identity_index}-{index}.png"
        Image.fromarray(render_face(identity, rng)).save(path)
        paths.append(path)
    return paths


def test_the_faces_command_enrols_lists_and_removes(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(config_dict(tmp_path / "state")))
    key_file = tmp_path / "faces.key"
    assert cli("faces", "--config", config, "new-key", "--key-file", key_file).returncode == 0
    fails_with(cli("faces", "--config", config, "new-key", "--key-file", key_file), 1, "exists already")
    alice = _write_crops(tmp_path / "crops", 0, 3, seed=1)
    bob = _write_crops(tmp_path / "crops", 1, 2, seed=2)
    for name, crops in (("Alice", alice), ("Bob", bob)):
        result = cli("faces", "--config", config, "enrol", "--key-file", key_file, "--name", name, *crops)
        assert result.returncode == 0, result.stderr
        assert f"enrolled '{name}' with {len(crops)} image(s)" in result.stdout
    listing = cli("faces", "--config", config, "list", "--key-file", key_file)
    assert listing.returncode == 0, listing.stderr
    assert [line.split(":")[0] for line in listing.stdout.splitlines()] == ["Alice", "Bob"]
    assert "Alice: 3 view(s)" in listing.stdout
    gallery = Gallery(tmp_path / "state" / "faces", load_key(key_file))
    unseen_view_of_alice = render_face(sample_identities(1, seed=11)[0], np.random.default_rng(9))
    embedder = FaceEmbedder()
    try:
        matched, _similarity = gallery.match(embedder.embed(unseen_view_of_alice[None])[0])
    finally:
        embedder.close()
    assert matched == "Alice"
    assert cli("faces", "--config", config, "remove", "--key-file", key_file, "Alice").returncode == 0
    assert gallery.names() == ["Bob"]
    fails_with(cli("faces", "--config", config, "remove", "--key-file", key_file, "Alice"), 1, "no one named 'Alice'")


def test_the_faces_command_fails_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENVIRONMENT, raising=False)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(config_dict(tmp_path / "state")))
    key_file, other_key = tmp_path / "faces.key", tmp_path / "other.key"
    write_key_file(key_file)
    write_key_file(other_key)
    crops = _write_crops(tmp_path / "crops", 0, 1, seed=3)
    fails_with(cli("faces", "--config", config, "list", "--key-file", key_file), 1, "nobody is enrolled")
    assert cli("faces", "--config", config, "enrol", "--key-file", key_file, "--name", "Alice", *crops).returncode == 0
    fails_with(cli("faces", "--config", config, "list", "--key-file", other_key), 1,
               "cannot decrypt the gallery", "wrong key or damaged file")
    fails_with(cli("faces", "--config", config, "list"), 1, "no gallery key")
    large = tmp_path / "large.png"
    Image.new("RGB", (200, 150)).save(large)
    fails_with(cli("faces", "--config", config, "enrol", "--key-file", key_file, "--name", "Bob", large), 1,
               "200x150", "112x112")
    fails_with(cli("faces", "--config", config, "enrol", "--key-file", key_file, "--name", "Bob",
                   tmp_path / "absent.png"), 1, "cannot read the face image")
