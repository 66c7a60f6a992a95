"""Condition monitoring of rotating machines: features, normal-state learning, scorers and the LSTM autoencoder."""
