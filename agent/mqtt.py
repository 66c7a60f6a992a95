"""Building paho-mqtt clients (v2 callback API, MQTT 5) with TLS and credentials from the config."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttConnection


def make_client(connection: MqttConnection, client_id: str) -> mqtt.Client:
    """A configured, unconnected MQTT 5 client; TLS never falls back to plaintext."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if connection.username:
        password = connection.password.read().get_secret_value() if connection.password else None
        client.username_pw_set(connection.username, password)
    if connection.tls:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(connection.tls.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if connection.tls.cert_file:
            key = str(connection.tls.key_file) if connection.tls.key_file else None
            context.load_cert_chain(str(connection.tls.cert_file), key)
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    # a broker that accepts TCP but never answers CONNACK is given up on as fast as a silent one
    client.connect_timeout = max(1.0, 1.5 * connection.keepalive_s - 1.0)
    return client


def paho_keepalive(keepalive_s: int) -> int:
    """The keepalive to give paho so that a silent broker is noticed within 1.5 x ``keepalive_s``.

    paho pings after ``k`` idle seconds and gives up ``k`` seconds later, checking about once a
    second: detection takes up to 2k + 1 s, so k = (1.5 K - 1) / 2.
    """
    return max(1, int((1.5 * keepalive_s - 1) / 2))


def connect_properties(session_expiry_s: int) -> Properties:
    """CONNECT properties asking the broker to keep our session for a while after a disconnect."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    return properties
