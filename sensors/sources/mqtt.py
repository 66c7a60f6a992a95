"""Sensor input from MQTT: a QoS 1 subscription in a persistent MQTT 5 session, acknowledged after use.

paho acknowledges a message on receipt unless told otherwise; then a message the agent had not
yet turned into events was lost when the agent was killed.  This source uses paho's manual
acknowledgement: a message is acknowledged only once the agent calls its ``ack`` (its events are
in the outbox, or it was rejected and counted), so a message lost in a crash is sent again by
the broker.  MQTT wants acknowledgements in the order the messages arrived, so they leave
through :class:`InOrderAcks`; the broker sends at most ``max_unacked`` unacknowledged messages
(Receive Maximum), and a message not done within ``ack_timeout_s`` is acknowledged anyway (and
counted) so that one stuck message cannot stop the input.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
import structlog
from pydantic import Field

from sensors import topics
from sensors.mqtt import connect_properties, failover, make_client, paho_keepalive, report_connect_failure, stop_client
from sensors.settings import MqttConnection
from sensors.sources import Ack, Deliver, Source, SourceEnv

log = structlog.get_logger(__name__)


class MqttSourceConfig(MqttConnection):
    """Sensor input from MQTT (QoS 1 subscription, acknowledged once used)."""

    kind: Literal["mqtt"]
    share_group: str | None = Field(default=None, description="MQTT 5 shared subscription group, to split "
                                    "sensor streams between several agents")
    sensors: list[str] | None = Field(default=None, min_length=1, description="subscribe to these sensors only "
                                      "(any kind); default all. Splits sensors between agents by config")
    client_id: str | None = Field(default=None, description="defaults to '<device>-in'")
    max_unacked: int = Field(default=1000, ge=1, le=65535, description="QoS 1 messages the broker may send "
                             "before we acknowledge (MQTT 5 Receive Maximum); more than the messages of all "
                             "sensors in one window, and at most the broker's max_inflight_messages")
    ack_timeout_s: float = Field(default=30.0, gt=0, description="a message not used within this time is "
                                 "acknowledged anyway (counted); longer than the longest window")


@dataclass
class _Pending:
    mid: int
    qos: int
    received: float
    done: bool = False


class InOrderAcks:
    """Acknowledgements in the order of receipt: a message is acknowledged once it and every earlier one are
    done (or the oldest waited ``timeout_s``).  A reconnect forgets the old connection's messages: the broker
    sends them again, and an acknowledgement must never go to a message id of another connection."""

    def __init__(self, send: Callable[[int, int], Any], timeout_s: float) -> None:
        self.send = send
        self.timeout_s = timeout_s
        self.timed_out = 0
        self.acked = 0
        self._lock = threading.Lock()
        self._queue: collections.deque[_Pending] = collections.deque()

    def add(self, mid: int, qos: int) -> Ack:
        """Note a received message; returns the callback that says it is done."""
        pending = _Pending(mid, qos, time.monotonic())
        with self._lock:
            self._queue.append(pending)
        return lambda: self._done(pending)

    def _done(self, pending: _Pending) -> None:
        pending.done = True
        self.release()

    def release(self) -> None:
        """Acknowledge the done (or timed-out) messages at the head of the queue, in order."""
        with self._lock:  # sending under the lock keeps the order; paho only queues the packet
            now = time.monotonic()
            while self._queue and (self._queue[0].done or now - self._queue[0].received > self.timeout_s):
                pending = self._queue.popleft()
                if not pending.done:
                    self.timed_out += 1
                    log.warning("sensor message not used in time; acknowledged anyway", mid=pending.mid,
                                timeout_s=self.timeout_s)
                self.send(pending.mid, pending.qos)
                self.acked += 1

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


#: sensor ids a standing-in source remembers (to let go at hand-back): junk ids must not grow it without
#: bound; sensors beyond it are forgotten by the agent's own least-recently-seen eviction instead
MAX_SENSORS_SEEN = 10_000
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason: another connection took the client id


class MqttSource(Source):
    """Subscribes to sensor topics with QoS 1 in a persistent MQTT 5 session; acknowledges after use.

    ``standing_in``: the session is another agent's (a standby took it over, agent/standby.py); when that
    agent connects again and takes it back, this source stops instead of taking it back in turn, and sets
    ``handed_back``.  It notes the sensors it delivered (``sensors_seen``) so they can be let go.
    """

    name = "mqtt"
    config_type = MqttSourceConfig

    def __init__(self, config: MqttSourceConfig, env: SourceEnv, standing_in: bool = False) -> None:
        self.config = config
        self.finished = threading.Event()
        self.client_id = config.client_id or f"{env.device}-in"
        self.client = make_client(config, self.client_id, manual_ack=True)
        self.brokers = failover(self.client)
        self.subscriptions = topics.sensor_subscriptions(config.topic_prefix, config.share_group, config.sensors)
        self.shares_streams = config.share_group is not None
        self.standing_in = standing_in
        self.handed_back = threading.Event()
        self.sensors_seen: set[str] = set()
        self.connected = threading.Event()
        self.closing = threading.Event()
        self.messages = 0
        self.acks = InOrderAcks(self.client.ack, config.ack_timeout_s)
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._check_timeouts, name="mqtt-source-acks", daemon=True)

    def start(self, deliver: Deliver) -> None:
        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                log.error("mqtt source connection refused", reason=str(reason))
                return
            self.brokers.connected()
            # subscribed at every connect: another broker (``brokers``) has no session of ours
            client.subscribe([(topic, 1) for topic in self.subscriptions])
            log.info("mqtt source connected", broker=self.brokers.current, topics=self.subscriptions,
                     session_present=bool(getattr(flags, "session_present", False)))
            self.connected.set()

        def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self.acks.reset()
            if self.standing_in and getattr(reason, "value", None) == SESSION_TAKEN_OVER:
                log.info("the agent we stood in for took its input session back", client_id=self.client_id)
                self.handed_back.set()
                client.disconnect()  # no reconnect: that would take the session from its owner again
            elif self.closing.is_set():  # our own close(): a normal stop, nothing to warn about
                log.info("mqtt source disconnected", reason=str(reason))
            elif self.connected.is_set():
                log.warning("mqtt source disconnected; reconnecting", broker=self.brokers.current,
                            reason=str(reason))
            else:
                report_connect_failure(client)
            self.connected.clear()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self.messages += 1
            if self.standing_in and len(self.sensors_seen) < MAX_SENSORS_SEEN:
                sensor = topics.sensor_of(message.topic)
                if sensor is not None:
                    self.sensors_seen.add(sensor)
            deliver(bytes(message.payload), self.acks.add(message.mid, message.qos) if message.qos else None)

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_message = on_message
        # a stable client id and a session that outlives a disconnect: the broker keeps QoS 1 samples
        self.brokers.connect(self.client, paho_keepalive(self.config.keepalive_s), clean_start=False,
                             properties=connect_properties(3600, self.config.max_unacked))
        self.client.loop_start()
        self._timer.start()

    def _check_timeouts(self) -> None:
        while not self._stop.wait(min(1.0, self.config.ack_timeout_s / 4)):
            self.acks.release()

    def close(self) -> None:
        self.closing.set()
        self._stop.set()
        stop_client(self.client)
        if self._timer.is_alive():
            self._timer.join(2)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), "messages": self.messages, "unacked": len(self.acks),
                "ack_timeouts": self.acks.timed_out, "broker": self.brokers.current, "failovers": self.brokers.moves}
