"""Small ResNet-style tile CNN that maps a 64x64 grayscale tile to a grid of defect probabilities."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkConfig:
    """Widths of the stem and of the stride-2 stages; the cell grid is tile / 2**(stages+1)."""

    widths: list[int] = field(default_factory=lambda: [16, 32, 64])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Stage(nn.Module):
    """A stride-2 convolution followed by a residual 3x3 convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = conv_bn(c_in, c_out, stride=2)
        self.conv = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.act(x + self.conv(x))


class Backbone(nn.Module):
    """Stem (stride 2) and stages; a 64 px tile becomes an 8x8 grid of features."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        widths = config.widths
        layers: list[nn.Module] = [conv_bn(1, widths[0], stride=2)]
        layers += [Stage(a, b) for a, b in itertools.pairwise(widths)]
        self.body = nn.Sequential(*layers)
        self.width = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TileNet(nn.Module):
    """Per-cell defect logits from a 1x1 head; the tile logit is their maximum (max pooling)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.head = nn.Conv2d(self.backbone.width, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tile logit (N,), cell logits (N, g, g))."""
        cells = self.head(self.backbone(x))[:, 0]
        return cells.flatten(1).amax(dim=1), cells


class Probabilities(nn.Module):
    """The exported graph: tile defect probability (N,), cell probabilities (N, g, g) and cell features.

    The features (N, C, g, g) are the backbone's output under the head: a station's normal model
    (``models/quality/runtime/station.py``) learns them from the station's own good parts.
    """

    def __init__(self, net: TileNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.net.backbone(tiles)
        cells = self.net.head(features)[:, 0]
        return torch.sigmoid(cells.flatten(1).amax(dim=1)), torch.sigmoid(cells), features


class ShapeNet(nn.Module):
    """Pretraining head: classify which synthetic primitive a tile holds (shares the backbone)."""

    def __init__(self, config: NetworkConfig, n_classes: int) -> None:
        super().__init__()
        self.backbone = Backbone(config)
        self.fc = nn.Linear(2 * self.backbone.width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        pooled = torch.cat([features.amax(dim=(2, 3)), features.mean(dim=(2, 3))], dim=1)
        return self.fc(pooled)
