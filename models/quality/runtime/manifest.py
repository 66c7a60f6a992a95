"""The quality model's manifest sections, typed: how to cut and normalise tiles, which thresholds were validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.quality.runtime.tiling import TileGeometry
from models.runtime import Manifest
from sensors.errors import ConfigError, ModelError


class Normalisation(BaseModel):
    """Pixel scaling the network was trained with: (pixel x scale - mean) / std."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(default=1 / 255, gt=0)
    mean: float = Field(default=TileGeometry.mean)
    std: float = Field(default=TileGeometry.std, gt=0)


class QualityPreprocessing(BaseModel):
    """The ``preprocessing`` section of a quality model's manifest."""

    model_config = ConfigDict(extra="forbid")
    color: str = Field(default="gray", pattern="^gray$", description="the network takes grayscale tiles")
    tile: int = Field(ge=8, description="tile side, pixels")
    stride: int = Field(ge=1, description="step between tiles, pixels")
    cell: int = Field(ge=1, description="heat-map cell side, pixels")
    normalisation: Normalisation = Field(default_factory=Normalisation)

    def geometry(self) -> TileGeometry:
        return TileGeometry(tile=self.tile, stride=self.stride, cell=self.cell, mean=self.normalisation.mean,
                            std=self.normalisation.std)


class QualityPostprocessing(BaseModel):
    """The ``postprocessing`` section: how tiles make a decision, and the validated threshold table."""

    model_config = ConfigDict(extra="forbid")
    aggregate: str = Field(default="max over tiles")
    heatmap: str = Field(default="cell_prob stitched, max over overlaps")
    reject_if: str = Field(default="score > threshold")
    false_reject_thresholds: dict[float, float] = Field(
        default_factory=dict, description="false-reject rate on validation -> the threshold that gives it")


class QualityManifest:
    """A quality model's manifest with its sections validated; ModelError says what is wrong."""

    def __init__(self, manifest: Manifest) -> None:
        try:
            self.preprocessing = QualityPreprocessing.model_validate(manifest.preprocessing)
            self.postprocessing = QualityPostprocessing.model_validate(manifest.postprocessing)
        except ValueError as error:
            raise ModelError(f"{manifest.path}: not a quality model's manifest: {error}") from None
        if "reject" not in manifest.thresholds:
            raise ModelError(f"{manifest.path}: thresholds.reject is missing")
        self.reject = float(manifest.thresholds["reject"])

    def threshold(self, reject_threshold: float | None, false_reject_target: float | None) -> float:
        """The reject threshold: an explicit one, else the validated one for a false-reject target, else the
        model's default; ConfigError when the model has no threshold validated for the target."""
        if reject_threshold is not None:
            return reject_threshold
        if false_reject_target is None:
            return self.reject
        table = self.postprocessing.false_reject_thresholds
        allowed = [rate for rate in table if rate <= false_reject_target]
        if not allowed:
            raise ConfigError(f"quality: the model has no validated threshold for a false-reject rate <= "
                              f"{false_reject_target} (it has {sorted(table)})")
        return table[max(allowed)]
