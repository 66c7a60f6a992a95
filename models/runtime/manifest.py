"""The model manifest: the YAML file beside each ONNX model that says what it is and how to use it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sensors.errors import ModelError


class TensorSpec(BaseModel):
    """One model input or output."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="tensor name in the ONNX graph")
    shape: list[int | str] = Field(description="dimensions; strings name dynamic axes")
    dtype: str = Field(default="float32", description="numpy dtype name")


class Manifest(BaseModel):
    """What a model is, how to feed it, and how to read its output."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="model name, reported in every event")
    task: str = Field(description="task this model serves, e.g. vibration or quality")
    version: str = Field(description="model version, reported in every event")
    file: str = Field(default="model.onnx", description="ONNX file, relative to the manifest")
    sha256: str | None = Field(default=None, description="checksum of the ONNX file, verified at load")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    postprocessing: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)
    report: str | None = Field(default=None, description="evaluation report (model card), relative path")
    training: dict[str, Any] = Field(default_factory=dict, description="command and seed that reproduce it")
    path: Path | None = Field(default=None, exclude=True, description="where the manifest was read from")

    @property
    def onnx_path(self) -> Path:
        base = self.path.parent if self.path else Path(".")
        return base / self.file


class ManifestError(ModelError):
    """A manifest that is missing, malformed or does not match its ONNX file."""


def load_manifest(path: str | Path, verify: bool = True) -> Manifest:
    """Read and validate a manifest; verifies the ONNX file's checksum when one is given."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
        manifest = Manifest.model_validate({**raw, "path": path})
    except (OSError, yaml.YAMLError, ValueError, TypeError) as error:
        raise ManifestError(f"{path}: {error}") from error
    if not manifest.onnx_path.is_file():
        raise ManifestError(f"{path}: model file {manifest.onnx_path} does not exist")
    if verify and manifest.sha256 and file_sha256(manifest.onnx_path) != manifest.sha256:
        raise ManifestError(f"{path}: {manifest.onnx_path} does not match its sha256")
    return manifest


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write a manifest, filling in the ONNX file's checksum."""
    path = Path(path)
    data = manifest.model_dump(mode="json", exclude={"path"})
    data["sha256"] = file_sha256(path.parent / manifest.file)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
