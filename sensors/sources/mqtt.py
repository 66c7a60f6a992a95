"""Sensor input from MQTT: a QoS 1 subscription in a persistent MQTT 5 session."""

from __future__ import annotations

import threading
from typing import Any, Literal

import paho.mqtt.client as mqtt
import structlog
from pydantic import Field

from sensors import topics
from sensors.mqtt import connect_properties, make_client, paho_keepalive, report_connect_failure, stop_client
from sensors.settings import MqttConnection
from sensors.sources import Deliver, Source, SourceEnv

log = structlog.get_logger(__name__)


class MqttSourceConfig(MqttConnection):
    """Sensor input from MQTT (QoS 1 subscription)."""

    kind: Literal["mqtt"]
    share_group: str | None = Field(default=None, description="MQTT 5 shared subscription group, to split "
                                    "sensor streams between several agents")
    client_id: str | None = Field(default=None, description="defaults to '<device>-in'")


class MqttSource(Source):
    """Subscribes to sensor topics with QoS 1 in a persistent MQTT 5 session."""

    name = "mqtt"
    config_type = MqttSourceConfig

    def __init__(self, config: MqttSourceConfig, env: SourceEnv) -> None:
        self.config = config
        self.finished = threading.Event()
        self.client = make_client(config, config.client_id or f"{env.device}-in")
        self.subscription = topics.sensor_subscription(config.topic_prefix, config.share_group)
        self.connected = threading.Event()
        self.closing = threading.Event()
        self.messages = 0

    def start(self, deliver: Deliver) -> None:
        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                log.error("mqtt source connection refused", reason=str(reason))
                return
            client.subscribe(self.subscription, qos=1)
            log.info("mqtt source connected", host=self.config.host, topic=self.subscription)
            self.connected.set()

        def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if self.closing.is_set():  # our own close(): a normal stop, nothing to warn about
                log.info("mqtt source disconnected", reason=str(reason))
            elif self.connected.is_set():
                log.warning("mqtt source disconnected; reconnecting", reason=str(reason))
            else:
                report_connect_failure(client)
            self.connected.clear()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self.messages += 1
            deliver(bytes(message.payload))

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_message = on_message
        # a stable client id and a session that outlives a disconnect: the broker keeps QoS 1 samples
        self.client.connect_async(self.config.host, self.config.port, paho_keepalive(self.config.keepalive_s),
                                  clean_start=False, properties=connect_properties(3600))
        self.client.loop_start()

    def close(self) -> None:
        self.closing.set()
        stop_client(self.client)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), "messages": self.messages}
