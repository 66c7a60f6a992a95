"""The example Mosquitto setup in deploy/mosquitto, run by the real broker: TLS, certificates, per-role access."""

from __future__ import annotations

import contextlib
import gc
import getpass
import glob
import json
import os
import shutil
import ssl
import subprocess
import sys
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
# Accounts by role, as acl.sh takes them; "stranger" has a certificate from the site's CA but no ACL block.
AGENTS, SENSORS, OPERATORS = ("device-01", "device-02"), ("sensor-01", "sensor-02"), ("operator",)
USERS = (*AGENTS, *SENSORS, *OPERATORS, "stranger")
STANDBY = ("device-02:device-01",)  # device-02 stands in for device-01 (agent/standby.py)
PASSWORD = "correct horse battery staple"
TIMEOUT = 5.0


def write_access(path: Path, agents: tuple[str, ...], sensors: tuple[str, ...], operators: tuple[str, ...],
                 standby: tuple[str, ...] = ()) -> str:
    """Run deploy/mosquitto/access.py for these accounts (``standby``: 'AGENT:OWNER') into ``path``; returns the
    JSON text."""
    arguments = [sys.executable, str(DEPLOY / "access.py")]
    for flag, names in (("--agent", agents), ("--sensor", sensors), ("--operator", operators),
                        ("--standby", standby)):
        for name in names:
            arguments += [flag, name]
    text = subprocess.run(arguments, capture_output=True, text=True, timeout=30, check=True).stdout
    path.write_text(text)
    return text


def broker_config_variant(conf: str, directory: Path, port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with its files moved under ``directory`` and its TLS listener on ``port``.

    Fails loudly if the deploy file no longer has the lines this rewrite expects, so the test
    cannot silently run some other configuration.
    """
    plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    if conf.count("\nlistener 8883\n") != 1 or "/etc/mosquitto/" not in conf or f"plugin {plugin}\n" not in conf:
        raise AssertionError("deploy/mosquitto/mosquitto.conf changed shape: update broker_config_variant")
    conf = conf.replace("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n")
    conf = conf.replace(f"plugin {plugin}\n", f"plugin {dynamic_security_plugin()}\n")
    conf = conf.replace("/etc/mosquitto/", f"{directory}/").replace("/var/lib/mosquitto/", f"{directory}/")
    # The test runs the broker itself: no persistence, log to the test's file, stay the current user.
    return f"persistence false\nlog_dest stderr\nuser {getpass.getuser()}\n{conf}"


def dynamic_security_plugin() -> str:
    """The plugin of the installed Mosquitto, whatever the machine's architecture."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    if not found:
        pytest.fail("mosquitto_dynamic_security.so not found; Debian's mosquitto package ships it")
    return found[0]


@dataclass
class SecureBroker:
    port: int
    pki: Pki
    log: Path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """Mosquitto running the deploy configuration: certificates from deploy/certs.sh, accounts from access.py."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is needed; .ci/run installs Debian's mosquitto package")
    directory = tmp_path_factory.mktemp("secure-broker")
    pki = make_pki(directory, clients=USERS)
    certs = directory / "certs"
    certs.mkdir()
    shutil.copy(pki.ca_cert, certs / "ca.crt")
    shutil.copy(pki.server.cert, certs / "server.crt")
    shutil.copy(pki.server.key, certs / "server.key")
    write_access(directory / "dynamic-security.json", AGENTS, SENSORS, OPERATORS, STANDBY)
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

    def subscribe(self, topic: str) -> bool:
        """Subscribe with QoS 1; True when the broker's SUBACK grants it."""
        done = threading.Event()
        granted: list[bool] = []

        def on_subscribe(_c: mqtt.Client, _u: object, _m: int, reasons: list[mqtt.ReasonCode], _p: object) -> None:
            granted.extend(not reason.is_failure for reason in reasons)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic, qos=1)
        assert done.wait(TIMEOUT), f"no SUBACK for {topic}"
        return all(granted)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.ReasonCode:
        """Publish with QoS 1 and return the reason code of the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)

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


def refused(session: Session, topic: str, retain: bool = False) -> bool:
    """Whether the broker answers a QoS 1 publish of ``topic`` with PUBACK "Not authorized"."""
    return session.publish(topic, b"forged", retain=retain).getName() == "Not authorized"


def delivered_nothing_forged(watcher: Session, marker_from: Session, marker_topic: str) -> bool:
    """After a marker published later has reached ``watcher``, no forged payload has (the broker keeps order)."""
    marker_from.publish(marker_topic, b"marker")
    assert wait_for(watcher, marker_topic, b"marker"), f"marker on {marker_topic} not delivered"
    with watcher.lock:
        return all(payload != b"forged" for _, payload in watcher.messages)


class TestTls:
    def test_right_ca_and_certificate_connect(self, secure_broker: SecureBroker) -> None:
        """A client trusting the right CA, with its client certificate, gets a successful CONNACK."""
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
        """A client without a client certificate never gets a CONNACK, even with a valid password."""
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


class TestIdentity:
    def test_certificate_decides_the_account(self, secure_broker: SecureBroker) -> None:
        """device-01's certificate presented with the username device-02 still acts as device-01 only."""
        session, error = connect(secure_broker, "device-02", pair=secure_broker.pki.clients["device-01"],
                                 password="guess")
        try:
            assert error is None and session.connected, (error, session.reason)
            assert refused(session, "edge/device-02/events/quality/part_inspected")
            assert not session.publish("edge/device-01/events/quality/part_inspected", b"own").is_failure
        finally:
            session.close()

    def test_account_without_acl_block_can_do_nothing(self, sessions: dict[str, Session]) -> None:
        """A certificate from the site's CA whose name has no ACL block may neither publish nor subscribe."""
        stranger, agent = sessions["stranger"], sessions["device-01"]
        assert agent.subscribe("edge/sensors/+/+")
        assert not stranger.subscribe("edge/#")
        for topic in ("edge/stranger/status", "edge/sensors/vibration/stranger", "edge/device-01/status"):
            assert refused(stranger, topic), topic
        assert delivered_nothing_forged(agent, sessions["sensor-01"], "edge/sensors/vibration/sensor-01")
        assert stranger.received("edge/sensors/vibration/sensor-01") == []


class TestAgent:
    def test_publishes_only_under_its_own_name(self, sessions: dict[str, Session]) -> None:
        """device-01's events, health and retained status reach an operator; its publishes as another device
        or as a sensor are refused and not delivered."""
        operator, device = sessions["operator"], sessions["device-01"]
        assert not operator.subscribe("edge/#")  # no grant on the whole tree ...
        for topic in ("edge/+/events/#", "edge/+/health/#", "edge/+/status"):
            assert operator.subscribe(topic), topic  # ... but on each topic an operator reads
        for topic in ("edge/device-02/events/quality/part_inspected", "edge/sensors/vibration/sensor-01",
                      "edge/sensors/vibration/device-01"):
            assert refused(device, topic), topic
        assert not device.publish("edge/device-01/health/vibration", b"health").is_failure
        assert not device.publish("edge/device-01/status", b"online", retain=True).is_failure
        assert wait_for(operator, "edge/device-01/health/vibration", b"health")
        assert delivered_nothing_forged(operator, device, "edge/device-01/events/quality/part_inspected")

    def test_a_standby_reads_its_owners_status_and_state_only(self, sessions: dict[str, Session]) -> None:
        """device-02 stands in for device-01: it reads device-01's retained status and learned state, not its
        events; device-01 is no standby and reads nothing of device-02's."""
        owner, standby = sessions["device-01"], sessions["device-02"]
        assert standby.subscribe("edge/device-01/status") and standby.subscribe("edge/device-01/state/#")
        assert not standby.subscribe("edge/device-01/events/#")
        assert not owner.subscribe("edge/device-02/status") and not owner.subscribe("edge/device-02/state/#")
        owner.publish("edge/device-01/state/vibration/pump-1.json", b"{}", retain=True)
        assert wait_for(standby, "edge/device-01/state/vibration/pump-1.json", b"{}")
        owner.publish("edge/device-01/status", b"offline", retain=True)
        assert wait_for(standby, "edge/device-01/status", b"offline")

    def test_reads_sensor_input_directly_and_shared(self, sessions: dict[str, Session]) -> None:
        """An agent's plain and MQTT 5 shared subscriptions to sensor input are granted and receive it."""
        plain, shared, sensor = sessions["device-01"], sessions["device-02"], sessions["sensor-02"]
        assert plain.subscribe("edge/sensors/+/+")
        assert shared.subscribe("$share/agents/edge/sensors/+/+")
        for kind in ("vibration", "audio", "frame"):
            topic = f"edge/sensors/{kind}/sensor-02"
            assert not sensor.publish(topic, kind.encode()).is_failure
            assert wait_for(plain, topic, kind.encode()) and wait_for(shared, topic, kind.encode())

    def test_cannot_read_other_devices(self, sessions: dict[str, Session]) -> None:
        """An agent receives its own events but not another agent's, whatever it subscribes to."""
        spy, other = sessions["device-01"], sessions["device-02"]
        for topic in ("edge/#", "edge/+/events/#", "edge/device-02/#", "$share/g/edge/device-02/#"):
            assert not spy.subscribe(topic), topic
        assert spy.subscribe("edge/device-01/#")
        other.publish("edge/device-02/events/vibration/anomaly_raised", b"private")
        spy.publish("edge/device-01/events/vibration/anomaly_raised", b"marker")
        assert wait_for(spy, "edge/device-01/events/vibration/anomaly_raised", b"marker")
        assert spy.received("edge/device-02/events/vibration/anomaly_raised") == []


class TestSensor:
    def test_cannot_speak_for_an_agent(self, sessions: dict[str, Session]) -> None:
        """sensor-01 can publish neither an event nor a retained status under edge/sensor-01/..., nor as another
        sensor, nor under a made-up kind that operators read as an agent's topic; none of it is delivered."""
        operator, sensor = sessions["operator"], sessions["sensor-01"]
        for topic in ("edge/+/events/#", "edge/+/health/#", "edge/+/status", "edge/+/errors"):
            assert operator.subscribe(topic), topic
        for topic in ("edge/sensor-01/events/vibration/anomaly_raised", "edge/sensor-01/errors",
                      "edge/sensors/events/sensor-01", "edge/sensors/health/sensor-01",
                      "edge/sensors/vibration/sensor-02"):
            assert refused(sensor, topic), topic
        assert refused(sensor, "edge/sensor-01/status", retain=True)
        assert delivered_nothing_forged(operator, sessions["device-01"], "edge/device-01/status")
        assert operator.received("edge/sensor-01/status") == []

    def test_cannot_join_the_agents_share_group(self, sessions: dict[str, Session]) -> None:
        """A sensor's subscriptions to sensor input, shared or not, are refused: every message of the stream goes
        to the agent in the group and none to the sensor."""
        agent, thief, sensor = sessions["device-01"], sessions["sensor-02"], sessions["sensor-01"]
        assert agent.subscribe("$share/agents/edge/sensors/+/+")
        assert not (thief.subscribe("$share/agents/edge/sensors/+/+"))
        assert not (thief.subscribe("edge/sensors/+/+"))
        topic = "edge/sensors/vibration/sensor-01"
        for index in range(20):
            sensor.publish(topic, b"%d" % index)
        assert wait_for(agent, topic, b"19")
        assert len(agent.received(topic)) == 20 and thief.received(topic) == []


class TestOperator:
    def test_is_read_only(self, sessions: dict[str, Session]) -> None:
        """An operator cannot publish anywhere: not under its own name, as a sensor, or as an agent."""
        operator, watcher = sessions["operator"], sessions["device-01"]
        assert watcher.subscribe("edge/device-01/#") and watcher.subscribe("edge/sensors/+/+")
        for topic in ("edge/operator/events/quality/part_inspected", "edge/sensors/frame/operator",
                      "edge/device-01/events/quality/part_inspected", "edge/device-01/status"):
            assert refused(operator, topic), topic
        assert delivered_nothing_forged(watcher, watcher, "edge/device-01/status")

    def test_reads_every_agent_but_not_sensor_input(self, sessions: dict[str, Session]) -> None:
        """An operator reads both agents' events, images and errors; sensor input is refused, shared or not."""
        operator, sensor = sessions["operator"], sessions["sensor-01"]
        for topic in ("edge/+/events/#", "edge/+/images/#", "edge/+/errors"):
            assert operator.subscribe(topic), topic
        assert not operator.subscribe("edge/sensors/+/+")
        assert not operator.subscribe("$share/agents/edge/sensors/+/+")
        sensor.publish("edge/sensors/vibration/sensor-01", b"input")
        for device in AGENTS:
            for topic in (f"edge/{device}/events/vibration/anomaly_raised", f"edge/{device}/images/quality/e1",
                          f"edge/{device}/errors"):
                sessions[device].publish(topic, b"seen")
                assert wait_for(operator, topic, b"seen"), topic
        assert operator.received("edge/sensors/vibration/sensor-01") == []


def test_shipped_file_is_what_access_py_writes(tmp_path: Path) -> None:
    """deploy/mosquitto/dynamic-security.json is access.py's output for its example accounts, so the tested rules
    are the shipped ones."""
    shipped = (DEPLOY / "dynamic-security.json").read_text()
    roles: dict[str, list[str]] = {"agent": [], "sensor": [], "operator": []}
    for client in json.loads(shipped)["clients"]:
        roles[client["textname"]].append(client["username"])
    assert all(roles.values()), roles
    assert write_access(tmp_path / "file", *(tuple(roles[role]) for role in ("agent", "sensor", "operator"))) == shipped


def test_access_py_refuses_names_that_widen_a_rule() -> None:
    """Wildcards, slashes, an agent named "sensors" or a name given two roles would grant more than one account's
    topics."""
    for arguments in (["--agent", "sensors"], ["--agent", "dev/+"], ["--sensor", "#"], ["--operator", "a b"],
                      ["--agent", "x", "--sensor", "x"], ["--agent", "x", "--standby", "x:y"],
                      ["--agent", "x", "--standby", "x:x"], ["--agent", "x", "--agent", "y", "--standby", "x"]):
        result = subprocess.run([sys.executable, str(DEPLOY / "access.py"), *arguments], capture_output=True,
                                text=True, timeout=30, check=False)
        assert result.returncode == 2 and ("refusing" in result.stderr or "--standby takes" in result.stderr), (
            arguments, result)
