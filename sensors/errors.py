"""The exception hierarchy of edge-agent, written down in one place.

Every error the agent raises on purpose derives from :class:`EdgeAgentError`, so a command can
end an expected failure with one line and a non-zero exit while a bug (any other exception)
still shows its traceback. It sits in the bottom layer because the wire format raises it too.

    EdgeAgentError            anything the user or the input can cause, with a message that says what to do
    ├── ConfigError           a configuration that fails validation or names something unusable
    ├── WireError             bytes that are not a valid wire-format message
    ├── RecordingError        a recording that is missing, not MCAP, or damaged beyond reading
    ├── ModelError            a model or manifest that is missing, malformed or fails its checks
    │   └── BackendUnavailable  the asked-for inference backend is not installed on this machine
    ├── BrokerError           a broker (MQTT) or endpoint (ZeroMQ) that refused or cannot be reached
    ├── StateError            a state directory that cannot be written, or saved state that cannot be used
    │   └── AlreadyRunning    another agent holds this state directory or device id
    └── RejectedInput         well-formed input a task cannot use (counted per sensor, never fatal)

Commands map them to exit codes (docs/deploy.md lists them): :data:`EXIT_CODES`.

None of them subclasses ``ValueError``: a task that catches ``RejectedInput`` must not swallow an
internal bug's ``ValueError`` as if the input were at fault.
"""

from __future__ import annotations

__all__ = ["EXIT_CODES", "AlreadyRunning", "BackendUnavailable", "BrokerError", "ConfigError", "EdgeAgentError",
           "ModelError", "RecordingError", "RejectedInput", "StateError", "WireError", "exit_code"]


class EdgeAgentError(Exception):
    """The root: an expected failure with a message a user can act on."""


class ConfigError(EdgeAgentError):
    """A configuration that fails validation; each line names a key path and what was expected."""


class WireError(EdgeAgentError):
    """Bytes that are not a valid wire-format message; the message names the field."""


class RecordingError(EdgeAgentError):
    """A recording that cannot be read (missing, not MCAP, damaged beyond its intact part)."""


class ModelError(EdgeAgentError):
    """A model or its manifest is missing, malformed, or does not match its file."""


class BackendUnavailable(ModelError):
    """The requested backend's library (e.g. tensorrt) is not installed on this machine."""


class BrokerError(EdgeAgentError):
    """A broker or endpoint refused the connection or cannot be reached."""


class StateError(EdgeAgentError):
    """A state directory that cannot be written, or learnt state on disk that cannot be used."""


class AlreadyRunning(StateError):
    """Another agent on this machine holds the same state directory or device id."""


class RejectedInput(EdgeAgentError):
    """Input that is well-formed on the wire but unusable by the task; counted per sensor."""


#: exit codes of an expected failure, most specific class first (sysexits.h values where one fits)
EXIT_CODES: tuple[tuple[type[EdgeAgentError], int], ...] = (
    (AlreadyRunning, 73),   # EX_CANTCREAT: the lock is held
    (BrokerError, 69),      # EX_UNAVAILABLE: worth retrying later
    (EdgeAgentError, 1),    # configuration, model, recording, state: fix the input
)


def exit_code(error: EdgeAgentError) -> int:
    """The exit code a command ends with for this expected failure."""
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))
