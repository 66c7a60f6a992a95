"""The Deep Watershed Detector network: a small ResNet, a RefineNet-style decoder to full resolution, three heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def conv_bn(inputs: int, outputs: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """ResNet's basic block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu(x + self.body(x))


class Refine(nn.Module):
    """RefineNet-style fusion: the coarser map upsampled, added to the projected skip, then a residual unit."""

    def __init__(self, coarse: int, skip: int, outputs: int) -> None:
        super().__init__()
        self.project_coarse = nn.Conv2d(coarse, outputs, 1, bias=False)
        self.project_skip = nn.Conv2d(skip, outputs, 1, bias=False)
        self.unit = ResidualBlock(outputs)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = functional.interpolate(self.project_coarse(coarse), size=skip.shape[-2:], mode="bilinear",
                                    align_corners=False)
        return self.unit(functional.relu(up + self.project_skip(skip)))


class WatershedDetector(nn.Module):
    """Grayscale page (N, 1, H, W) in [0, 1] -> energy logits (N, E, H, W), class logits (N, K, H, W) and
    log box size (N, 2, H, W: height, width in pixels); H and W multiples of 16."""

    def __init__(self, classes: int, levels: int, widths: tuple[int, ...] = (16, 24, 48, 64, 96)) -> None:
        super().__init__()
        self.stem = conv_bn(1, widths[0])
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn(widths[i], widths[i + 1], stride=2), ResidualBlock(widths[i + 1]))
            for i in range(len(widths) - 1))
        self.refines = nn.ModuleList(
            Refine(widths[i + 1], widths[i], widths[i])
            for i in reversed(range(len(widths) - 1)))
        self.energy = nn.Conv2d(widths[0], levels, 1)
        self.classes = nn.Conv2d(widths[0], classes, 1)
        self.size = nn.Conv2d(widths[0], 2, 1)

    def forward(self, page: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = [self.stem(page - 0.5)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        x = features[-1]
        for refine, skip in zip(self.refines, reversed(features[:-1]), strict=True):
            x = refine(x, skip)
        return self.energy(x), self.classes(x), self.size(x)
