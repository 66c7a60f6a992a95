"""A small CenterNet-style face detector: a four-stage CNN, a top-down merge to stride 4, and three heads."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class NetworkConfig(BaseModel):
    """Channel widths of the stages (strides 4, 8, 16) and of the heads."""

    model_config = ConfigDict(extra="forbid")
    stem: int = Field(default=16, description="channels of the stride-2 stem")
    widths: tuple[int, int, int] = Field(default=(24, 48, 80), description="channels at strides 4, 8, 16")
    head: int = Field(default=32, description="channels of the merged stride-4 map and the heads")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    """Two 3 x 3 convolutions with a skip: depth for the receptive field without losing the gradient."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class FaceCenterNet(nn.Module):
    """Image (N, 3, H, W) normalised -> heatmap logits (N, 1), box (N, 4) and landmarks (N, 10) at H/4 x W/4."""

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        config = config or NetworkConfig()
        c4, c8, c16 = config.widths
        self.stem = _conv(3, config.stem, 2)  # with stage4 below: stride 4, runtime.detector.STRIDE
        self.stage4 = nn.Sequential(_conv(config.stem, c4, 2), _Residual(c4))
        self.stage8 = nn.Sequential(_conv(c4, c8, 2), _Residual(c8))
        # two blocks at stride 16: the receptive field (~200 px) must cover the largest faces (90 px at input)
        self.stage16 = nn.Sequential(_conv(c8, c16, 2), _Residual(c16), _Residual(c16))
        self.lateral16 = nn.Conv2d(c16, config.head, 1)
        self.lateral8 = nn.Conv2d(c8, config.head, 1)
        self.lateral4 = nn.Conv2d(c4, config.head, 1)
        # one shared 3 x 3 convolution for all heads: the stride-4 map is where most of the compute goes
        self.merge = _conv(config.head, config.head)
        self.heat = nn.Conv2d(config.head, 1, 1)
        self.box = nn.Conv2d(config.head, 4, 1)
        self.marks = nn.Conv2d(config.head, 10, 1)
        if self.heat.bias is not None:  # always: Conv2d has a bias unless told otherwise
            nn.init.constant_(self.heat.bias, -4.6)  # CenterNet's prior: a face centre at 1 % of the cells

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.stage4(self.stem(x))
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        top = self.lateral8(f8) + nn.functional.interpolate(self.lateral16(f16), size=f8.shape[2:], mode="nearest")
        merged = self.lateral4(f4) + nn.functional.interpolate(top, size=f4.shape[2:], mode="nearest")
        merged = self.merge(merged)
        return self.heat(merged), self.box(merged), self.marks(merged)


class Exported(nn.Module):
    """The graph that ships: the heatmap through a sigmoid, so ONNX outputs are scores in 0..1."""

    def __init__(self, net: FaceCenterNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, box, marks = self.net(x)
        return torch.sigmoid(heat), box, marks
