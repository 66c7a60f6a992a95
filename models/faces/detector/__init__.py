"""Face detector of the face task: a small CenterNet-style net trained on synthetic scenes (training code)."""
