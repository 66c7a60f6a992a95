"""Run-time code of the symbol detector: page tiling and DWD post-processing (numpy, scipy, Pillow)."""
