"""A small SE-ResNet face embedder (112x112 RGB -> 128-d unit vector) and the ArcFace additive angular margin."""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional

INPUT_SIZE = 112
# ArcFace's input convention: RGB, (x - 127.5) / 128, NCHW float32; the ONNX graph expects this, not uint8
PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0


class NetworkConfig(BaseModel):
    """Widths and depths of the stages; every stage halves the resolution (112 -> 56 stem -> 28 -> 14 -> 7)."""

    model_config = ConfigDict(extra="forbid")
    stem: int = Field(default=24, description="channels of the stride-2 stem convolution")
    widths: list[int] = Field(default=[32, 64, 128], description="channels per stage")
    blocks: list[int] = Field(default=[1, 1, 1], description="residual blocks per stage")
    se_reduction: int = Field(default=8, description="squeeze-and-excitation bottleneck ratio")
    embedding: int = Field(default=128, description="embedding size")
    dropout: float = Field(default=0.2, description="dropout before the embedding layer")


def preprocess(images: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB crops -> (N, 3, 112, 112) float32 as the embedder expects."""
    scaled = (images.astype(np.float32) - PIXEL_MEAN) / PIXEL_SCALE
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SEResidualBlock(nn.Module):
    """ArcFace's IR block (BN-conv-BN-PReLU-conv-BN) with SE on the residual branch."""

    def __init__(self, inputs: int, outputs: int, stride: int, reduction: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(inputs), nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs),
            nn.PReLU(outputs), nn.Conv2d(outputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs),
            SqueezeExcite(outputs, reduction))
        self.shortcut: nn.Module = nn.Identity() if stride == 1 and inputs == outputs else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class FaceNet(nn.Module):
    """Stem, SE-residual stages, then BN-dropout-FC-BN on the flattened 7x7 map (keeps where features are)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, config.stem, 3, 2, 1, bias=False), nn.BatchNorm2d(config.stem),
                                   nn.PReLU(config.stem)]
        channels = config.stem
        for width, count in zip(config.widths, config.blocks, strict=True):
            for index in range(count):
                layers.append(SEResidualBlock(channels, width, 2 if index == 0 else 1, config.se_reduction))
                channels = width
        self.body = nn.Sequential(*layers)
        side = INPUT_SIZE // 2 ** (len(config.widths) + 1)
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.Dropout(config.dropout), nn.Flatten(),
                                  nn.Linear(channels * side * side, config.embedding), nn.BatchNorm1d(config.embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings (the margin loss normalises them itself)."""
        return self.head(self.body(x))


class Embedder(nn.Module):
    """What is exported: the network followed by L2 normalisation."""

    def __init__(self, net: FaceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.normalize(self.net(x), dim=1)


class ArcMargin(nn.Module):
    """Additive angular margin softmax (Deng et al. 2019): logits s * cos(theta + m) for the true class."""

    def __init__(self, embedding: int, classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, embedding))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        """Cross-entropy with the margin; ``margin`` overrides the configured one (warm-up)."""
        m = self.margin if margin is None else margin
        cosine = functional.linear(functional.normalize(embeddings), functional.normalize(self.weight))
        cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cosine.gather(1, labels[:, None])) + m)
        # past theta = pi - m, cos(theta + m) stops decreasing; fall back to CosFace's linear penalty there
        fallback = cosine.gather(1, labels[:, None]) - m * math.sin(m)
        target = torch.where(cosine.gather(1, labels[:, None]) > math.cos(math.pi - m), target, fallback)
        logits = cosine.scatter(1, labels[:, None], target) * self.scale
        return functional.cross_entropy(logits, labels)
