"""The face task's run-time building blocks (numpy and Pillow only): alignment, tracking and the gallery."""
