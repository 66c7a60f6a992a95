"""Standing in for other agents: their learned state mirrored from retained messages, their input taken over
when their status says offline, handed back when they return (docs/scaling.md, "Stateful streams").

An agent with ``cluster.publish_state`` publishes every file of its tasks' state folders (vibration baselines,
speaker names, station normals, ...) as a retained message ``{prefix}/{device}/state/{task}/{file}`` when it
changes.  A standby (``cluster.standby_for``) keeps the latest of each under ``{state_dir}/standby/{owner}``.
When the owner's retained status (its last will on a crash) says offline, the standby copies that state into
its own task folders, then connects with the owner's input client id and clean start off: the broker hands it
the owner's persistent session, with every sample queued or unacknowledged since the crash, so nothing is lost
and nothing is learned again.  When the owner connects again it takes the session back (the broker disconnects
the standby with "session taken over"); the standby lets the owner's sensors go.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from pydantic import Field

from sensors import topics
from sensors.files import write_bytes_atomic
from sensors.mqtt import failover, make_client, paho_keepalive, stop_client
from sensors.settings import Strict
from sensors.sources import Deliver, SourceEnv
from sensors.sources.mqtt import MqttSource, MqttSourceConfig

log = structlog.get_logger(__name__)
MIRROR_FOLDER = "standby"


class StandbyOwner(Strict):
    """An agent this one stands in for."""

    device: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="the owner's device id")
    client_id: str | None = Field(default=None, description="the owner's MQTT source client_id; defaults to "
                                  "'<device>-in', the owner's default")
    sensors: list[str] | None = Field(default=None, min_length=1, description="the owner's sensors, subscribed "
                                      "to if its session has expired; default: the same as our own source's")


class ClusterConfig(Strict):
    """Sharing sticky work with a standby agent (docs/scaling.md)."""

    publish_state: bool = Field(default=False, description="publish the tasks' learned state, retained, under "
                                "{prefix}/{device}/state/ for a standby agent")
    state_interval_s: float = Field(default=5.0, gt=0, le=3600, description="how often changed state files "
                                    "are looked for and published")
    max_state_file_mb: float = Field(default=8.0, gt=0, le=256, description="a larger state file is not "
                                     "published (logged); keep it under the broker's message_size_limit")
    standby_for: list[StandbyOwner] = Field(default=[], description="agents whose input this one takes over "
                                            "when their status says offline")

    @property
    def active(self) -> bool:
        return self.publish_state or bool(self.standby_for)


@dataclass
class _Owner:
    """What we know of one owner: its last status, and its input session while we hold it."""

    config: StandbyOwner
    offline: bool = False
    taken: MqttSource | None = None
    #: the owner took its session back while its status still said offline (it was alive): wait for it to
    #: say online, then offline again, before taking it over once more (no tug of war over the session)
    wait_for_online: bool = False
    takeovers: int = 0


class Standby:
    """The cluster client: publishes our state, mirrors the owners', takes over and hands back their input.

    ``poll`` is called from the agent's supervision loop; paho's thread only records what arrived.
    """

    def __init__(self, config: ClusterConfig, source: MqttSourceConfig, env: SourceEnv, state_dir: Path,
                 task_names: Iterable[str], deliver: Deliver, release: Callable[[set[str]], None]) -> None:
        self.config = config
        self.source = source
        self.env = env
        self.state_dir = state_dir
        self.task_names = sorted(task_names)
        self.deliver = deliver
        self.release = release
        self.prefix = source.topic_prefix
        self.owners = {owner.device: _Owner(owner) for owner in config.standby_for}
        self.published: dict[str, tuple[int, int]] = {}  # state file published -> (mtime_ns, size)
        self.republish = threading.Event()
        self.last_scan = float("-inf")
        self.lock = threading.Lock()
        self.client = make_client(source, f"{env.device}-cluster")
        self.brokers = failover(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.brokers.connect(self.client, paho_keepalive(self.source.keepalive_s), clean_start=True)
        self.client.loop_start()

    # -- paho's thread -----------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("cluster connection refused", reason=str(reason))
            return
        self.brokers.connected()
        for device in self.owners:
            client.subscribe([(topics.status_topic(self.prefix, device), 1),
                              (topics.state_topic(self.prefix, device), 1)])
        self.republish.set()  # a broker without persistence may have lost our retained state
        log.info("cluster client connected", broker=self.brokers.current, standby_for=sorted(self.owners))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic[len(self.prefix) + 1:].split("/")
        owner = self.owners.get(parts[0]) if len(parts) >= 2 else None
        if owner is None:
            return
        if parts[1] == "status":
            self._on_status(owner, bytes(message.payload))
        elif parts[1] == "state" and len(parts) >= 4:
            self._mirror(owner.config.device, parts[2:], bytes(message.payload))

    def _on_status(self, owner: _Owner, payload: bytes) -> None:
        try:
            state = json.loads(payload).get("state")
        except (ValueError, AttributeError):
            log.warning("unreadable status of the agent we stand in for", owner=owner.config.device)
            return
        with self.lock:
            owner.offline = state == "offline"
            if state == "online":
                owner.wait_for_online = False

    def _mirror(self, device: str, relative: list[str], payload: bytes) -> None:
        """Keep the owner's state file (an empty payload: the file was deleted, e.g. reset-baseline)."""
        if any(part in ("", ".", "..") or part.startswith(".") for part in relative):
            log.warning("state file name refused", owner=device, path="/".join(relative))
            return
        path = self.state_dir / MIRROR_FOLDER / device / Path(*relative)
        try:
            if payload:
                write_bytes_atomic(path, payload)
            else:
                path.unlink(missing_ok=True)
        except OSError as error:
            log.error("cannot keep the state of the agent we stand in for", owner=device, path=str(path),
                      error=str(error))

    # -- the supervision loop ----------------------------------------------------------------------
    def poll(self, now: float) -> None:
        """Publish changed state; take over an owner gone offline; hand back one that returned."""
        due = self.republish.is_set() or now - self.last_scan >= self.config.state_interval_s
        if self.config.publish_state and due:
            self.last_scan = now
            self._publish_state()
        for owner in self.owners.values():
            with self.lock:
                offline, waiting = owner.offline, owner.wait_for_online
            taken = owner.taken
            if taken is None and offline and not waiting:
                self._take_over(owner)
            elif taken is not None and (taken.handed_back.is_set() or not offline):
                self._hand_back(owner)

    def _take_over(self, owner: _Owner) -> None:
        device = owner.config.device
        installed = self._install_state(device)
        config = self.source.model_copy(update={
            "client_id": owner.config.client_id or f"{device}-in",
            "sensors": owner.config.sensors or self.source.sensors})
        owner.taken = MqttSource(config, self.env, standing_in=True)
        owner.taken.start(self.deliver)
        owner.takeovers += 1
        log.warning("standing in for an agent whose status says offline", owner=device,
                    client_id=owner.taken.client_id, state_files=installed)

    def _hand_back(self, owner: _Owner) -> None:
        taken, owner.taken = owner.taken, None
        assert taken is not None
        if taken.handed_back.is_set():
            with self.lock:
                owner.wait_for_online = owner.offline
        taken.close()
        self.release(set(taken.sensors_seen))
        log.info("handed the input back to its agent", owner=owner.config.device, sensors=sorted(taken.sensors_seen))

    def _install_state(self, device: str) -> int:
        """Copy the owner's mirrored state files into our task folders (before its input flows); returns how many."""
        mirror = self.state_dir / MIRROR_FOLDER / device
        count = 0
        for path in sorted(mirror.rglob("*")) if mirror.is_dir() else []:
            if path.is_file() and not path.name.startswith("."):
                try:
                    write_bytes_atomic(self.state_dir / path.relative_to(mirror), path.read_bytes())
                    count += 1
                except OSError as error:
                    log.error("cannot install the state of the agent we stand in for", owner=device,
                              path=str(path), error=str(error))
        return count

    def _publish_state(self) -> None:
        """Publish, retained, each state file that changed since last time; an empty message for a deleted one."""
        if self.republish.is_set():
            self.republish.clear()
            self.published.clear()
        current = dict(self._state_files())
        limit = self.config.max_state_file_mb * 2**20
        for relative, stamp in current.items():
            if self.published.get(relative) == stamp:
                continue
            if stamp[1] > limit:
                log.warning("state file too large to publish for a standby", path=relative, size=stamp[1])
            else:
                try:
                    payload = (self.state_dir / relative).read_bytes()
                except OSError:
                    continue  # replaced or deleted meanwhile: the next scan sees it
                self.client.publish(topics.state_topic(self.prefix, self.env.device, relative), payload, qos=1,
                                    retain=True)
            self.published[relative] = stamp
        for relative in set(self.published) - set(current):
            self.client.publish(topics.state_topic(self.prefix, self.env.device, relative), b"", qos=1, retain=True)
            del self.published[relative]

    def _state_files(self) -> Iterable[tuple[str, tuple[int, int]]]:
        for task in self.task_names:
            folder = self.state_dir / task
            for root, _, names in os.walk(folder):
                for name in names:
                    if name.startswith("."):  # atomic writes' temporary files
                        continue
                    path = Path(root, name)
                    try:
                        stat = path.stat()
                    except OSError:
                        continue
                    yield path.relative_to(self.state_dir).as_posix(), (stat.st_mtime_ns, stat.st_size)

    def stats(self) -> dict[str, Any]:
        return {"standing_in_for": sorted(device for device, owner in self.owners.items() if owner.taken),
                "takeovers": sum(owner.takeovers for owner in self.owners.values()),
                "state_files_published": len(self.published)}

    def close(self) -> None:
        for owner in self.owners.values():
            if owner.taken is not None:
                owner.taken.close()  # a clean disconnect: the session stays for its owner (or our next start)
                owner.taken = None
        stop_client(self.client)
