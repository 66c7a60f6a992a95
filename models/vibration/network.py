"""LSTM autoencoder over sequences of normalised vibration feature vectors (training side, PyTorch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the autoencoder; stored in checkpoints so a model can be rebuilt exactly."""

    n_features: int
    hidden_size: int = 32
    latent_size: int = 8
    num_layers: int = 1
    #: inputs are clamped to +-input_clip (z-score units) so one sensor artefact (a dropout edge, a
    #: missed spike: z of 100 and more) cannot dominate a sequence; a fault still saturates many
    #: features in every window, which is what the error picks up
    input_clip: float = 8.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LstmAutoencoder(nn.Module):
    """Encodes a feature sequence into one small latent vector and decodes the sequence back.

    The bottleneck forces the net to keep only what healthy sequences have in common, so a
    sequence with a new pattern (a bearing fault's energy in the envelope bands) comes back
    with a larger reconstruction error.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.LSTM(config.n_features, config.hidden_size, config.num_layers, batch_first=True)
        self.to_latent = nn.Linear(config.hidden_size, config.latent_size)
        self.from_latent = nn.Linear(config.latent_size, config.hidden_size)
        self.decoder = nn.LSTM(config.hidden_size, config.hidden_size, config.num_layers, batch_first=True)
        self.to_features = nn.Linear(config.hidden_size, config.n_features)

    def forward(self, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map (batch, time, features) to the reconstruction of the clamped input and its squared
        error per time step (batch, time), averaged over features."""
        clipped = self.clip(sequences)
        _, (hidden, _) = self.encoder(clipped)
        latent = torch.tanh(self.to_latent(hidden[-1]))
        seed = self.from_latent(latent).unsqueeze(1).expand(-1, sequences.shape[1], -1)
        decoded, _ = self.decoder(seed)
        reconstruction = self.to_features(decoded)
        step_error = ((reconstruction - clipped) ** 2).mean(dim=2)
        return reconstruction, step_error

    def clip(self, sequences: torch.Tensor) -> torch.Tensor:
        """The input as the network sees it (clamped to +-input_clip)."""
        return sequences.clamp(-self.config.input_clip, self.config.input_clip)
