"""Models of the five tasks (one folder each) and the inference runtime that runs them."""
