"""The symbols task plug-in: music symbol detection on photographed or scanned score pages (Deep Watershed Detector)."""
