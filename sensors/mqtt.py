"""Building paho-mqtt clients (v2 callback API, MQTT 5) with TLS and credentials from the config."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensors.errors import ConfigError
from sensors.settings import MqttConnection, Tls

log = structlog.get_logger(__name__)
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10


def make_client(connection: MqttConnection, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    """A configured, unconnected MQTT 5 client; TLS never falls back to plaintext.

    With ``manual_ack`` incoming QoS 1 messages are acknowledged only by ``client.ack(mid, qos)``.
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if connection.username:
        password = connection.password.read().get_secret_value() if connection.password else None
        client.username_pw_set(connection.username, password)
    context = tls_context(connection.tls) if connection.tls else None
    if context is not None:
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
    # connects to connection.endpoints() (``failover(client).connect``), logs failures and fails over
    client.on_connect_fail = Failover(connection, context, client_id)
    # a broker that accepts TCP but never answers CONNACK is given up on as fast as a silent one
    client.connect_timeout = max(1.0, 1.5 * connection.keepalive_s - 1.0)
    return client


def stop_client(client: mqtt.Client) -> None:
    """Disconnect, stop the network thread and close every socket the client holds.

    paho-mqtt 2.2 keeps the socket pair that ``loop_start`` opens until the client object is
    garbage-collected; a long-running agent that reconnects or reloads should not wait for that.
    """
    client.disconnect()
    client.loop_stop()
    client._reset_sockets(sockpair_only=True)


def paho_keepalive(keepalive_s: int) -> int:
    """The keepalive to give paho so that a silent broker is noticed within 1.5 x ``keepalive_s``.

    paho pings after ``k`` idle seconds and gives up ``k`` seconds later, checking about once a
    second: detection takes up to 2k + 1 s, so k = (1.5 K - 1) / 2.
    """
    return max(1, int((1.5 * keepalive_s - 1) / 2))


def tls_context(tls: Tls) -> ssl.SSLContext:
    """Server verification against the configured CA, TLS 1.2 or newer, optional client certificate;
    ConfigError names a file that cannot be read or used."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as error:  # SSLError is an OSError; both name no file, so we do
        files = ", ".join(str(path) for path in (tls.ca_file, tls.cert_file, tls.key_file) if path)
        raise ConfigError(f"TLS: cannot use {files}: {error.strerror or error}; check the paths and that "
                          "they are PEM certificates and keys") from None
    return context


class Failover:
    """The brokers a client connects to, and paho's connect-failure callback: it logs why an attempt failed
    (paho says nothing of the cause) and, after ``failover_attempts`` failed attempts in a row, points the
    client at the next broker of the list (round-robin).

    paho reconnects to the host and port of the last ``connect_async``; calling it again from the network
    thread (in a failure callback) is the supported way to change them, as the ``host`` and ``port``
    setters refuse while paho is reconnecting.  The reconnect backoff is reset on a move so that the next
    broker is tried after the shortest delay.  A client stays on a broker that works (no fail-back).
    """

    def __init__(self, connection: MqttConnection, context: ssl.SSLContext | None, client_id: str) -> None:
        self.connection = connection
        self.context = context
        self.client_id = client_id
        self.endpoints = connection.endpoints()
        self.index = 0
        self.failures = 0  # failed attempts in a row on the current broker
        self.moves = 0  # times the client moved to another broker
        self.last_reason: str | None = None
        self._connect_args: dict[str, Any] = {}

    @property
    def current(self) -> str:
        """The broker the client connects (or tries to connect) to, as 'host:port'."""
        host, port = self.endpoints[self.index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def connect(self, client: mqtt.Client, keepalive: int, **options: Any) -> None:
        """``connect_async`` to the current broker; later moves reuse ``keepalive`` and ``options``."""
        self._connect_args = {"keepalive": keepalive, **options}
        host, port = self.endpoints[self.index]
        client.connect_async(host, port, **self._connect_args)

    def connected(self) -> None:
        """A connection was accepted (CONNACK): the current broker works."""
        self.failures = 0
        self.last_reason = None

    def __call__(self, client: mqtt.Client, userdata: object) -> None:
        host, port = self.endpoints[self.index]
        reason = diagnose(host, port, self.context)
        self.failures += 1
        if reason != self.last_reason:
            self.last_reason = reason
            log.error("mqtt connection failed; retrying with backoff", client_id=self.client_id, broker=self.current,
                      tls=self.context is not None, reason=reason)
        # a client connected by other means (not ``connect``) keeps its broker
        if self._connect_args and len(self.endpoints) > 1 and self.failures >= self.connection.failover_attempts:
            self.move(client, f"{self.failures} failed connection attempts: {reason}")

    def move(self, client: mqtt.Client, why: str) -> None:
        """Point the client at the next broker; paho's loop connects to it after its (reset) backoff."""
        previous = self.current
        self.index = (self.index + 1) % len(self.endpoints)
        self.failures = 0
        self.last_reason = None
        self.moves += 1
        log.warning("mqtt failing over to the next broker", client_id=self.client_id, from_broker=previous,
                    to_broker=self.current, why=why)
        host, port = self.endpoints[self.index]
        client.connect_async(host, port, **self._connect_args)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)


def failover(client: mqtt.Client) -> Failover:
    """The broker list of a client made by ``make_client``."""
    handler = client.on_connect_fail
    if not isinstance(handler, Failover):
        raise TypeError("not a client made by sensors.mqtt.make_client")
    return handler


def report_connect_failure(client: mqtt.Client) -> None:
    """Count and log a failed connection attempt that paho does not report (a drop before CONNACK, a refused
    CONNACK)."""
    handler = client.on_connect_fail
    if isinstance(handler, Failover):
        handler(client, None)


def diagnose(host: str, port: int, context: ssl.SSLContext | None, timeout: float = 2.0) -> str:
    """Why a connection fails: the TCP or TLS error as the OS and OpenSSL report it."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if context is None:
                return "TCP connects, but the broker did not accept the MQTT connection in time"
            with context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False) as tls:
                tls.do_handshake()
                try:
                    tls.recv(1)  # TLS 1.3 reports a refused client certificate only on the first read
                except TimeoutError:
                    return "TLS is fine, but the broker did not accept the MQTT connection in time"
                return "TLS is fine, but the broker closed the connection"
    except ssl.SSLError as error:
        return f"TLS: {error.reason or error}"
    except OSError as error:
        return f"network: {error}"


def connect_properties(session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    """CONNECT properties asking the broker to keep our session for a while after a disconnect, and to
    send at most ``receive_maximum`` QoS 1 messages that we have not acknowledged yet."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties
