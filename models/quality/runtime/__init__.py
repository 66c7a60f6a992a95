"""Run-time code of the quality task: tiled inference and heat-map post-processing (numpy only)."""
