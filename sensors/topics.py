"""The MQTT topic layout (also ZeroMQ PUB/SUB topic frames); docs/events.md and docs/wire-format.md document it.

    {prefix}/sensors/{kind}/{sensor_id}           sensor input (wire-format bytes)
    {prefix}/{device}/events/{task}/{type}        events (JSON), one topic per task and type
    {prefix}/{device}/health/{task}               periodic health events (JSON)
    {prefix}/{device}/images/{task}/{event_id}    JPEG attachments (e.g. defect crops)
    {prefix}/{device}/errors                      rejected input and internal errors (JSON)
    {prefix}/{device}/status                      retained status; last will says "offline"
    {prefix}/{device}/state/{task}/{file}         retained learned state, for a standby agent (docs/scaling.md)
"""

from __future__ import annotations

from sensors.wire import Kind

DEFAULT_PREFIX = "edge"
KIND_NAMES = {Kind.VIBRATION: "vibration", Kind.FRAME: "frame", Kind.AUDIO: "audio"}


def sensor_topic(prefix: str, kind: Kind, sensor_id: str) -> str:
    return f"{prefix}/sensors/{KIND_NAMES[kind]}/{sensor_id}"


def sensor_subscription(prefix: str, share_group: str | None = None) -> str:
    """All sensor input; with a share group, MQTT 5 shared subscription to split load over agents."""
    return sensor_subscriptions(prefix, share_group)[0]


def sensor_subscriptions(prefix: str, share_group: str | None = None, sensors: list[str] | None = None) -> list[str]:
    """All sensor input, or only the named sensors' (of any kind); with a share group, MQTT 5 shared
    subscriptions that split the load over the group's agents."""
    topics = [f"{prefix}/sensors/+/{sensor}" for sensor in sensors] if sensors else [f"{prefix}/sensors/+/+"]
    return [f"$share/{share_group}/{topic}" for topic in topics] if share_group else topics


def sensor_of(topic: str) -> str | None:
    """The sensor id of a sensor input topic (the last level), None for another topic."""
    parts = topic.split("/")
    return parts[-1] if len(parts) >= 3 and parts[-3] == "sensors" else None


def state_topic(prefix: str, device: str, relative: str = "#") -> str:
    """A learned state file (``task/file``) an agent publishes, retained, for its standby."""
    return f"{prefix}/{device}/state/{relative}"


ERROR_TYPES = frozenset({"input_rejected", "clock_jump"})


def event_topic(prefix: str, device: str, task: str, event_type: str) -> str:
    if event_type in ERROR_TYPES:
        return error_topic(prefix, device)
    if event_type == "health":
        return f"{prefix}/{device}/health/{task}"
    return f"{prefix}/{device}/events/{task}/{event_type}"


def image_topic(prefix: str, device: str, task: str, event_id: str) -> str:
    return f"{prefix}/{device}/images/{task}/{event_id}"


def error_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/errors"


def status_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/status"


def alert_subscriptions(prefix: str, device: str = "+") -> list[str]:
    """What an operator's console subscribes to (used by ``edge-agent tail``)."""
    return [f"{prefix}/{device}/events/#", f"{prefix}/{device}/health/#",
            f"{prefix}/{device}/errors", f"{prefix}/{device}/status"]
