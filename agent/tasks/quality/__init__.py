"""The quality task plug-in: visual quality control of parts (config, events, demo camera)."""
