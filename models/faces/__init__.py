"""Face embedder: synthetic identities, an SE-ResNet trained with an ArcFace margin, export and evaluation."""
