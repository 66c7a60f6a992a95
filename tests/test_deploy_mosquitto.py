"""The example Mosquitto setup in deploy/mosquitto, run by the real broker: TLS, client certificates, ACL."""

from __future__ import annotations

import contextlib
import gc
import getpass
import os
import shutil
import ssl
import subprocess
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.testing import CertPair, Pki, make_pki, stop_client, wait_for_listener, wait_until
from tests.conftest import MOSQUITTO, free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
PASSWORD = "correct horse battery staple"
USERS = ("device-01", "device-02", "sensor-01", "sensor-02", "operator")
TIMEOUT = 5.0


def broker_config_variant(conf: str, directory: Path, port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with its files moved under ``directory`` and its TLS listener on ``port``.

    Fails loudly if the deploy file no longer has the lines this rewrite expects, so the test
    cannot silently run some other configuration.
    """
    if conf.count("\nlistener 8883\n") != 1 or "/etc/mosquitto/" not in conf:
        raise AssertionError("deploy/mosquitto/mosquitto.conf changed shape: update broker_config_variant")
    conf = conf.replace("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n")
    conf = conf.replace("/etc/mosquitto/", f"{directory}/")
    # The test runs the broker itself: no persistence, log to the test's file, stay the current user.
    return f"persistence false\nlog_dest stderr\nuser {getpass.getuser()}\n{conf}"


@dataclass
class SecureBroker:
    port: int
    pki: Pki
    log: Path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """Mosquitto running the deploy configuration: certificates from deploy/certs.sh, passwords, the deploy ACL."""
    if not os.path.exists(MOSQUITTO) or not shutil.which("mosquitto_passwd"):
        pytest.fail("mosquitto and mosquitto_passwd are needed; .ci/run installs Debian's mosquitto package")
    directory = tmp_path_factory.mktemp("secure-broker")
    pki = make_pki(directory, clients=USERS)
    certs = directory / "certs"
    certs.mkdir()
    shutil.copy(pki.ca_cert, certs / "ca.crt")
    shutil.copy(pki.server.cert, certs / "server.crt")
    shutil.copy(pki.server.key, certs / "server.key")
    passwd = directory / "passwd"
    passwd.touch(mode=0o600)
    for user in USERS:
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, PASSWORD], check=True, timeout=30)
    shutil.copy(DEPLOY / "acl", directory / "acl")
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(broker_config_variant((DEPLOY / "mosquitto.conf").read_text(), directory, port))
    log = directory / "mosquitto.log"
    with log.open("ab") as output:
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_listener(port, process, log)
        yield SecureBroker(port, pki, log)
    finally:
        process.terminate()
        process.wait(10)


@dataclass(frozen=True)
class Failure:
    """How connect() failed: the exception's type and message."""

    kind: type[BaseException]
    message: str


@dataclass
class Session:
    """One paho-mqtt client (v2 callback API, MQTT 5) and what happened to it."""

    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    reason: mqtt.ReasonCode | None = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    puback: dict[int, mqtt.ReasonCode] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def connected(self) -> bool:
        return self.connack.is_set() and self.reason is not None and not self.reason.is_failure

    def received(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for name, payload in self.messages if name == topic]

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(TIMEOUT), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> mqtt.ReasonCode:
        """Publish with QoS 1 and return the reason code of the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1)

        def acknowledged() -> bool:
            with self.lock:
                return info.mid in self.puback

        wait_until(acknowledged, TIMEOUT, message=f"no PUBACK for {topic}")
        with self.lock:
            return self.puback[info.mid]

    def close(self) -> None:
        stop_client(self.client)
        close_socket(self.client)


def close_socket(client: mqtt.Client) -> None:
    sock = client.socket()
    if sock is not None:
        sock.close()


def connect(broker: SecureBroker, user: str, ca: Path | None = None, pair: CertPair | None = None,
            password: str = PASSWORD) -> tuple[Session, Failure | None]:
    """Connect over TLS and wait for CONNACK or a disconnect; returns the session and how connect() failed."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    session = Session(client)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        session.reason = reason
        session.connack.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        session.disconnected.set()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with session.lock:
            session.messages.append((message.topic, bytes(message.payload)))

    def on_publish(_c: mqtt.Client, _u: object, mid: int, reason: mqtt.ReasonCode, _p: object) -> None:
        with session.lock:
            session.puback[mid] = reason

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    client.on_message, client.on_publish = on_message, on_publish
    client.tls_set(ca_certs=str(ca or broker.pki.ca_cert),
                   certfile=str(pair.cert) if pair else None, keyfile=str(pair.key) if pair else None)
    client.username_pw_set(user, password)
    # paho-mqtt 2.2 never closes the socket of a failed TLS handshake (Client._ssl_wrap_socket):
    # reclaim it here, quietly, rather than as a ResourceWarning in whichever test runs the GC next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client.connect("127.0.0.1", broker.port, keepalive=30)
            failure = None
        except (OSError, ssl.SSLError) as error:
            failure = Failure(type(error), str(error))
        gc.collect()
    if failure is not None:
        return session, failure
    client.loop_start()
    with contextlib.suppress(TimeoutError):  # a session that never hears back is reported as not connected
        wait_until(lambda: session.connack.is_set() or session.disconnected.is_set(), TIMEOUT)
    if not session.connected:
        session.close()
    return session, None


@pytest.fixture
def sessions(secure_broker: SecureBroker) -> Iterator[dict[str, Session]]:
    """Connected sessions for every test user, each with its own certificate and password."""
    opened = {}
    try:
        for user in USERS:
            session, error = connect(secure_broker, user, pair=secure_broker.pki.clients[user])
            assert error is None and session.connected, f"{user} could not connect: {error} {session.reason}"
            opened[user] = session
        yield opened
    finally:
        for session in opened.values():
            session.close()


def wait_for(session: Session, topic: str, payload: bytes) -> bool:
    """Whether ``payload`` arrives on ``topic`` within TIMEOUT s."""
    try:
        return wait_until(lambda: payload in session.received(topic), TIMEOUT)
    except TimeoutError:
        return False


class TestTls:
    def test_right_ca_certificate_and_password_connect(self, secure_broker: SecureBroker) -> None:
        """A client trusting the right CA, with its client certificate and password, gets a successful CONNACK."""
        session, error = connect(secure_broker, "device-01", pair=secure_broker.pki.clients["device-01"])
        try:
            assert error is None
            assert session.connected, session.reason
        finally:
            session.close()

    def test_wrong_ca_is_refused(self, secure_broker: SecureBroker) -> None:
        """A client trusting another CA refuses the broker's certificate during the handshake."""
        session, error = connect(secure_broker, "device-01", ca=secure_broker.pki.wrong_ca_cert,
                                 pair=secure_broker.pki.clients["device-01"])
        assert error is not None and issubclass(error.kind, ssl.SSLCertVerificationError), error
        assert not session.connected

    def test_no_client_certificate_is_refused(self, secure_broker: SecureBroker) -> None:
        """A client without a client certificate never gets a CONNACK, even with the right password."""
        session, error = connect(secure_broker, "device-01")
        assert not session.connected
        # TLS 1.2 fails in connect(); with TLS 1.3 the broker's alert arrives after the handshake.
        assert error is not None or session.disconnected.is_set()
        assert "peer did not return a certificate" in secure_broker.log.read_text()

    def test_client_certificate_of_another_ca_is_refused(self, secure_broker: SecureBroker) -> None:
        """A client certificate signed by an unknown CA is refused by the broker."""
        session, error = connect(secure_broker, "device-01", pair=secure_broker.pki.wrong_clients["device-01"])
        assert not session.connected
        assert error is not None or session.disconnected.is_set()

    def test_wrong_password_is_refused(self, secure_broker: SecureBroker) -> None:
        """A valid certificate with a wrong password gets a failing CONNACK (certificate alone is not enough)."""
        session, error = connect(secure_broker, "device-01", pair=secure_broker.pki.clients["device-01"],
                                 password="guess")
        assert error is None
        assert session.reason is not None and session.reason.is_failure
        assert session.reason.getName() in {"Bad user name or password", "Not authorized"}


class TestAcl:
    def test_device_publishes_only_under_its_own_name(self, sessions: dict[str, Session]) -> None:
        """device-01's event reaches an operator; its publish under device-02's tree is refused and not delivered."""
        operator, device = sessions["operator"], sessions["device-01"]
        operator.subscribe("edge/+/events/#")
        forged = "edge/device-02/events/quality/defect"
        own = "edge/device-01/events/quality/defect"
        assert device.publish(forged, b"forged").getName() == "Not authorized"
        assert device.publish(own, b"marker").is_failure is False
        assert wait_for(operator, own, b"marker")
        assert operator.received(forged) == []

    def test_sensor_publishes_only_its_own_stream(self, sessions: dict[str, Session]) -> None:
        """sensor-01's samples reach an agent's subscription; samples claiming to be sensor-02's are not delivered."""
        agent, sensor = sessions["device-02"], sessions["sensor-01"]
        agent.subscribe("edge/sensors/+/+")
        forged, own = "edge/sensors/vibration/sensor-02", "edge/sensors/vibration/sensor-01"
        assert sensor.publish(forged, b"forged").getName() == "Not authorized"
        assert sensor.publish(own, b"marker").is_failure is False
        assert wait_for(agent, own, b"marker")
        assert agent.received(forged) == []

    def test_sensor_input_reaches_shared_subscription(self, sessions: dict[str, Session]) -> None:
        """An agent's MQTT 5 shared subscription to sensor input is allowed and receives the stream."""
        agent, sensor = sessions["device-01"], sessions["sensor-02"]
        agent.subscribe("$share/agents/edge/sensors/+/+")
        topic = "edge/sensors/audio/sensor-02"
        sensor.publish(topic, b"shared")
        assert wait_for(agent, topic, b"shared")

    def test_operator_is_read_only(self, sessions: dict[str, Session]) -> None:
        """An operator cannot publish anywhere, not even under its own name or as a sensor."""
        operator, watcher = sessions["operator"], sessions["device-01"]
        watcher.subscribe("edge/#")
        for topic in ("edge/operator/events/quality/defect", "edge/sensors/frame/operator",
                      "edge/device-01/events/quality/defect"):
            assert operator.publish(topic, b"forged").getName() == "Not authorized", topic
        sessions["device-01"].publish("edge/device-01/status", b"marker")
        assert wait_for(watcher, "edge/device-01/status", b"marker")
        with watcher.lock:
            assert all(payload != b"forged" for _, payload in watcher.messages)

    def test_device_cannot_read_other_devices(self, sessions: dict[str, Session]) -> None:
        """A device subscribed to everything receives its own events but not another device's."""
        spy, other, own = sessions["device-01"], sessions["device-02"], sessions["device-01"]
        spy.subscribe("edge/#")
        other.publish("edge/device-02/events/vibration/anomaly", b"private")
        own.publish("edge/device-01/events/vibration/anomaly", b"marker")
        assert wait_for(spy, "edge/device-01/events/vibration/anomaly", b"marker")
        assert spy.received("edge/device-02/events/vibration/anomaly") == []
