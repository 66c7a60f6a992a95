"""Sensor streams: the wire format, topic layout, ingest sources, recordings, replay and simulators."""
