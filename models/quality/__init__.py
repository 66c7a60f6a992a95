"""Visual quality control: synthetic inspection data, tile CNN training, export and evaluation."""
