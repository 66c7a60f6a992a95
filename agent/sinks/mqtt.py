"""Events upstream over MQTT 5, QoS 1, through the durable outbox; rows leave it only when PUBACKed."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Literal

import paho.mqtt.client as mqtt
import structlog
from pydantic import Field

from agent import __version__
from agent.events import StorageDegraded, StorageRecovered, iso_time
from agent.outbox import Outbox, OutboxConfig
from agent.sinks import Outgoing, Sink, SinkEnv
from agent.sinks.home_assistant import HomeAssistant, HomeAssistantConfig
from sensors import topics
from sensors.mqtt import connect_properties, failover, make_client, paho_keepalive, report_connect_failure, stop_client
from sensors.settings import MqttConnection

log = structlog.get_logger(__name__)
CLOSE_DRAIN_S = 2.0


class MqttSinkConfig(MqttConnection):
    """Events upstream over MQTT 5, QoS 1, through the durable outbox."""

    kind: Literal["mqtt"]
    client_id: str | None = Field(default=None, description="defaults to '<device>-out'")
    session_expiry_s: int = Field(default=3600, ge=0, description="MQTT 5 session expiry")
    max_inflight: int = Field(default=100, ge=1, le=65535, description="unacknowledged QoS 1 messages")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig,
                                                description="Home Assistant MQTT discovery (opt-in)")


class MqttSink(Sink):
    """Publishes through the outbox with QoS 1; rows leave the outbox only when PUBACKed."""

    name = "mqtt"
    config_type = MqttSinkConfig

    def __init__(self, config: MqttSinkConfig, env: SinkEnv) -> None:
        self.config = config
        self.device = device = env.device
        state_dir = env.state_dir
        self.prefix = config.topic_prefix
        outbox = config.outbox
        self.outbox = Outbox(state_dir / "outbox.sqlite", outbox.max_events, int(outbox.max_mb * 2**20),
                             outbox.replay_window_s)
        self.report = env.report
        self._degraded_since: float | None = None  # when storage_degraded was raised
        self.status_topic = topics.status_topic(self.prefix, device)
        self.home_assistant = (HomeAssistant(config.home_assistant, self.prefix, device, self.status_topic,
                                             __version__) if config.home_assistant.enabled else None)
        self.client = make_client(config, config.client_id or f"{device}-out")
        self.brokers = failover(self.client)
        # the will is stored by the broker at connect and sent when the connection dies, so it carries no
        # time (it would be the connect time); subscribers take the time they receive it
        self.client.will_set(self.status_topic, _status_payload(device, "offline", timed=False), qos=1,
                             retain=True)
        self.client.max_inflight_messages_set(config.max_inflight)
        self.client.max_queued_messages_set(config.max_inflight * 2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.connects = 0
        self.last_connect_s: float | None = None
        self._disconnected_at: float | None = time.monotonic()
        self._lost_at: float | None = None  # when the connection last dropped without our asking
        self._lock = threading.Lock()
        self._ha_lock = threading.Lock()  # not _lock: publishing under it must not wait on PUBACK bookkeeping
        self._inflight: dict[int, int] = {}
        self._acked: list[int] = []
        # PUBACKs whose mid was not (yet) recorded: a reply faster than our bookkeeping, or paho's own
        # resend of a message from before a reconnect; checked right after each publish, then forgotten
        self._unmatched: dict[int, bool] = {}
        self.refused = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        # the outbox is ours, not the session's: a move to another broker (``brokers``) loses no event
        self.brokers.connect(self.client, paho_keepalive(config.keepalive_s), clean_start=False,
                             properties=connect_properties(config.session_expiry_s))
        self.client.loop_start()
        self._pump_thread = threading.Thread(target=self._pump, name="outbox-pump", daemon=True)
        self._pump_thread.start()

    def send(self, item: Outgoing) -> None:
        ttl = self.config.outbox.ttl_s
        self.outbox.put(item.event["event_id"], item.topic(self.prefix), item.payload, item.severity,
                        ttl.get(item.event["type"]))
        if item.attachment is not None:
            self.outbox.put(item.event["event_id"], item.attachment_topic(self.prefix), item.attachment,
                            item.severity, ttl.get("image"))
        self._wake.set()
        if self.home_assistant is not None:
            with self._ha_lock:  # entity states in event order, from several workers
                messages = self.home_assistant.on_event(item.event)
                if self.connected.is_set():  # else published at the next connect, latest state only
                    for topic, payload in messages:
                        self.client.publish(topic, payload, qos=1, retain=True)

    def send_status(self, status: dict[str, Any]) -> None:
        if self.connected.is_set():
            self.client.publish(self.status_topic, json.dumps(status), qos=1, retain=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("mqtt connection refused", broker=self.brokers.current, reason=str(reason))
            return
        if self._disconnected_at is not None:
            self.last_connect_s = time.monotonic() - self._disconnected_at
        self.connects += 1
        self.brokers.connected()
        if self._lost_at is not None:
            # the broker may have restarted and lost what it acknowledged since its last autosave
            self.outbox.replay(self._lost_at - self.config.outbox.replay_window_s)
            self._lost_at = None
        log.info("mqtt connected", broker=self.brokers.current, pending=self.outbox.pending(),
                 session_present=bool(getattr(flags, "session_present", False)))
        client.publish(self.status_topic, _status_payload(self.device, "online"), qos=1, retain=True)
        if self.home_assistant is not None:
            with self._ha_lock:
                for topic, payload in self.home_assistant.everything():
                    client.publish(topic, payload, qos=1, retain=True)
        self.connected.set()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set():
            log.warning("mqtt disconnected; events stay in the outbox", broker=self.brokers.current,
                        reason=str(reason))
            self._disconnected_at = time.monotonic()
            if not self._stop.is_set():
                self._lost_at = self._disconnected_at
        elif not self._stop.is_set():  # dropped before CONNACK (e.g. a refused client certificate under TLS
            report_connect_failure(client)  # 1.3): say why, and count the attempt towards a failover
        self.connected.clear()
        with self._lock:
            self._inflight.clear()
            self._unmatched.clear()
            self.outbox.new_epoch()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                self._unmatched[mid] = reason.is_failure
            else:
                self._settle(row_id, reason.is_failure)
        self._wake.set()

    def _settle(self, row_id: int, refused: bool) -> None:
        """Called under the lock: an acknowledged row leaves the outbox; a refused one waits for the next
        connection (a broker that refuses, e.g. by ACL, is misconfigured: say so, lose nothing)."""
        if refused:
            self.refused += 1
            log.error("broker refused a message; it stays in the outbox", row=row_id)
        else:
            self._acked.append(row_id)

    def _pump(self) -> None:
        last_expiry = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._publish_pending()
                self._report_storage()
                if time.monotonic() - last_expiry > 10:
                    last_expiry = time.monotonic()
                    self.outbox.expire()
            except Exception:  # the pump must survive anything; the outbox keeps the events
                log.exception("outbox pump error")
                time.sleep(1)

    def _publish_pending(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
        self.outbox.acknowledge(acked)
        if not self.connected.is_set():
            return
        room = self.config.max_inflight - len(self._inflight)
        for entry in self.outbox.take(room) if room > 0 else []:
            # never hold our lock while calling into paho: its network thread takes paho's lock and then ours
            info = self.client.publish(entry.topic, entry.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("mqtt publish refused; will retry", rc=info.rc)
                self.outbox.release([entry.row_id])
                continue
            with self._lock:
                refused = self._unmatched.pop(info.mid, None)
                if refused is None:
                    self._inflight[info.mid] = entry.row_id
                else:
                    self._settle(entry.row_id, refused)
        with self._lock:
            self._unmatched.clear()  # what is left answered messages published before a reconnect

    def _report_storage(self) -> None:
        """Raise storage_degraded when the outbox cannot write, storage_recovered when it can again."""
        error = self.outbox.degraded
        if error is not None and self._degraded_since is None:
            self._degraded_since = time.monotonic()
            log.error("storage degraded; events are kept in memory and still published", error=error)
            self.report(StorageDegraded(error=error, in_memory=self.outbox.in_memory()).draft(
                "", time.time_ns(), "warning"))
        elif error is None and self._degraded_since is not None:
            degraded_for = round(time.monotonic() - self._degraded_since, 1)
            self._degraded_since = None
            log.info("storage recovered", degraded_for_s=degraded_for)
            self.report(StorageRecovered(degraded_for_s=degraded_for).draft("", time.time_ns(), "info"))

    def drain(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty (or the timeout passes); True if everything was delivered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.pending() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return self.outbox.pending() == 0

    def stats(self) -> dict[str, Any]:
        counters = self.outbox.counters
        return {"connected": self.connected.is_set(), "pending": self.outbox.pending(), "stored": counters.stored,
                "delivered": counters.delivered, "evicted": counters.evicted, "expired": counters.expired,
                "over_limit": counters.over_limit, "storage_degraded": self.outbox.degraded is not None,
                "in_memory": self.outbox.in_memory(), "replayed": counters.replayed,
                "write_failures": counters.write_failures, "refused": self.refused, "connects": self.connects,
                "last_reconnect_s": self.last_connect_s, "broker": self.brokers.current,
                "failovers": self.brokers.moves}

    def close(self) -> None:
        if self.connected.is_set():
            self.drain(CLOSE_DRAIN_S)  # what cannot go now stays in the outbox for the next start
        self._stop.set()
        self._wake.set()
        self._pump_thread.join(5)
        if self.connected.is_set():
            self.client.publish(self.status_topic, _status_payload(self.device, "offline"), qos=1,
                                retain=True).wait_for_publish(2)
        stop_client(self.client)
        self.outbox.close()


def _status_payload(device: str, state: str, timed: bool = True) -> bytes:
    status = {"device": device, "state": state}
    if timed:
        status["time"] = iso_time(time.time_ns())
    else:
        status["reason"] = "connection lost"
    return json.dumps(status).encode()
