"""The paper's BiLSTM speaker network, its pairwise KL (PKLD) loss and an additive-margin softmax to compare."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional

from models.speakers.runtime import features


class NetworkConfig(BaseModel):
    """Layer sizes (TASKS.md section 5); ``speakers`` is N, the number of training speakers."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(default=256, description="units per direction of each BiLSTM")
    speakers: int = Field(default=0, description="N training speakers (set from the corpus)")
    dropout_lstm: float = Field(default=0.5, description="dropout after the first BiLSTM")
    dropout_dense: float = Field(default=0.25, description="dropout after dense(10N)")


class InputNorm(nn.Module):
    """Removes each segment's overall level, then standardises each mel band with training statistics.

    Not in the paper: a gain shifts every bin of ``log10(1 + 10000 x)`` by about the same amount, so
    subtracting the segment's mean makes the embedding (nearly) level-invariant, and fixed per-band
    statistics keep the LSTM gates out of saturation.  Both are part of the exported graph.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features.N_MELS))
        self.register_buffer("std", torch.ones(features.N_MELS))

    def level_free(self, mel: torch.Tensor) -> torch.Tensor:
        return mel - mel.mean(dim=(1, 2), keepdim=True)

    def fit(self, mel: torch.Tensor) -> None:
        """Set the band statistics from (n, frames, bands) training segments."""
        flat = self.level_free(mel).reshape(-1, mel.shape[-1])
        self.mean.copy_(flat.mean(dim=0))
        self.std.copy_(flat.std(dim=0).clamp_min(1e-3))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return (self.level_free(mel) - self.mean) / self.std


class SpeakerNet(nn.Module):
    """InputNorm -> BiLSTM(256, sequences) -> dropout -> BiLSTM(256) -> dense(10N) -> dropout -> dense(5N) -> dense(N).

    ``embed`` is the second BiLSTM's output (its last forward and last backward state, 2 x hidden), as the
    Keras ``Bidirectional(LSTM(256))`` of the paper; ``forward`` returns the N logits (softmax in the loss).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        n = config.speakers
        self.norm = InputNorm()
        self.first = nn.LSTM(features.N_MELS, config.hidden, batch_first=True, bidirectional=True)
        self.second = nn.LSTM(2 * config.hidden, config.hidden, batch_first=True, bidirectional=True)
        self.drop_lstm = nn.Dropout(config.dropout_lstm)
        self.head = nn.Sequential(
            nn.Linear(2 * config.hidden, 10 * n), nn.ReLU(), nn.Dropout(config.dropout_dense),
            nn.Linear(10 * n, 5 * n), nn.ReLU(),
        )
        self.classify = nn.Linear(5 * n, n)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, 40, 128) log-mel -> (batch, 2 x hidden) embedding."""
        sequence, _ = self.first(self.norm(mel))
        _, (state, _) = self.second(self.drop_lstm(sequence))
        return torch.cat([state[0], state[1]], dim=1)

    def features_before_softmax(self, mel: torch.Tensor) -> torch.Tensor:
        """The dense(5N) activations, which the additive-margin softmax normalises."""
        return self.head(self.embed(mel))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features_before_softmax(mel))


class Embedder(nn.Module):
    """The exported graph: log-mel segments in, embeddings out."""

    def __init__(self, net: SpeakerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net.embed(mel)


def pkld_loss(logits: torch.Tensor, labels: torch.Tensor, margin: float = 3.0) -> torch.Tensor:
    """Pairwise KL divergence over all ordered pairs of a batch (Hsu & Kira; the paper's loss).

    Same speaker: KL(p||q) + KL(q||p) (summing over ordered pairs gives both terms of every pair);
    different speakers: max(0, m - KL(p||q)) + max(0, m - KL(q||p)).  Mean over pairs, self-pairs excluded.
    """
    log_p = functional.log_softmax(logits, dim=1)
    p = log_p.exp()
    # kl[i, j] = KL(p_i || p_j) = sum_k p_i,k (log p_i,k - log p_j,k)
    kl = (p * log_p).sum(dim=1, keepdim=True) - p @ log_p.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=logits.device)
    pair_loss = torch.where(same, kl, functional.relu(margin - kl))
    return pair_loss[off_diagonal].mean()


class AdditiveMarginSoftmax(nn.Module):
    """CosFace / AM-softmax: cosine logits to unit class weights, margin ``m`` off the true class, scale ``s``."""

    def __init__(self, width: int, classes: int, scale: float = 30.0, margin: float = 0.35) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, width) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = functional.normalize(hidden, dim=1) @ functional.normalize(self.weight, dim=1).T
        target = functional.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        return functional.cross_entropy(self.scale * (cosine - self.margin * target), labels)
