"""Run-time code of the vibration task: features, per-machine monitor, scorers (numpy and ONNX Runtime only)."""
