"""edge-agent: the streaming monitoring daemon (config, pipeline, events, outbox, sinks, CLI).

Exceptions, in one place:
- ``agent.config.ConfigError``: a configuration that fails validation (names key paths).
- ``sensors.wire.WireError``: a sensor message that breaks the wire format.
- ``agent.tasks.base.RejectedInput``: a well-formed message a task cannot use (e.g. an
  undecodable JPEG); counted as a rejection for its sensor.
- ``models.runtime.ManifestError`` / ``BackendUnavailable``: a model that cannot be loaded.
"""

__version__ = "0.1.0"
