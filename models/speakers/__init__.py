"""Speaker clustering: BiLSTM speaker embeddings on log-mel spectrograms (training, export, evaluation)."""
