"""Symbol detection on score pages with the Deep Watershed Detector: data, network, training, evaluation."""
