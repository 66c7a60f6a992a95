"""Broker failover: a ``brokers`` list, the move to the next broker when one is down, no event lost on the way."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import zmq
from pydantic import ValidationError

from agent.daemon import Agent
from agent.events import EventDraft, dumps, finalize
from agent.metrics import AgentCollector, EventCounts
from agent.sinks import Outgoing, SinkEnv
from agent.sinks.mqtt import MqttSink, MqttSinkConfig
from agent.tail import status_line
from agent.testing import Subscriber, publisher, stop_client, wait_until
from sensors.errors import ConfigError
from sensors.settings import MqttConnection, parse_broker
from sensors.sources import SourceEnv
from sensors.sources.mqtt import MqttSource, MqttSourceConfig
from tests.conftest import MOSQUITTO, Broker, free_port

DEVICE = "failover-test"


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """Two Mosquitto brokers on free ports (A and B), stopped after the test."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed; .ci/run installs Debian's mosquitto package")
    first = Broker(tmp_path, free_port()).start()
    try:
        second = Broker(tmp_path, free_port()).start()
    except BaseException:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


def outgoing(index: int) -> Outgoing:
    event = finalize(EventDraft("energy_high", f"pump-{index % 3}", 1_700_000_000_000_000_000 + index,
                                "alarm", float(index)), DEVICE, "probe")
    return Outgoing(event, dumps(event))


def ids_of(received: list[tuple[str, bytes]]) -> set[str]:
    return {json.loads(payload)["event_id"] for _, payload in received}


def delivery_metrics(sink: MqttSink) -> dict[tuple[str, tuple[str, ...]], float]:
    """The broker samples the metrics endpoint would serve for an agent with this one sink."""
    collector = AgentCollector(cast(Agent, SimpleNamespace(sinks=[sink])), EventCounts(10))
    return {(sample.name, tuple(sample.labels.values())): sample.value
            for family in collector._delivery_metrics() for sample in family.samples
            if sample.name.startswith(("edge_agent_broker_current", "edge_agent_broker_failovers_total"))}


class TestBrokersSetting:
    def test_host_and_port_alone_still_mean_one_broker(self) -> None:
        assert MqttConnection(host="broker.plant", port=8883).endpoints() == [("broker.plant", 8883)]
        assert MqttConnection().endpoints() == [("localhost", 1883)]

    def test_brokers_are_tried_in_the_order_given(self) -> None:
        connection = MqttConnection(brokers=["10.0.0.5:1883", "broker-b.plant:8883", "[fd00::5]:1883"])
        assert connection.endpoints() == [("10.0.0.5", 1883), ("broker-b.plant", 8883), ("fd00::5", 1883)]
        assert connection.failover_attempts == 2

    @pytest.mark.parametrize(("entry", "message"), [
        ("10.0.0.5", "is not 'host:port'"),
        ("10.0.0.5:", "is not 'host:port'"),
        (":1883", "is not 'host:port'"),
        ("fd00::5:1883", "is not 'host:port'"),
        ("mqtt://10.0.0.5:1883", "is not 'host:port'"),
        ("broker a:1883", "is not 'host:port'"),
        ("10.0.0.5:0", "port 0 is not between 1 and 65535"),
        ("10.0.0.5:70000", "port 70000 is not between 1 and 65535"),
    ])
    def test_a_bad_entry_is_named(self, entry: str, message: str) -> None:
        with pytest.raises(ValidationError, match=message) as caught:
            MqttConnection(brokers=["10.0.0.6:1883", entry])
        assert repr(entry) in str(caught.value)
        with pytest.raises(ValueError, match=message):
            parse_broker(entry)

    def test_brokers_with_host_or_port_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="give either 'brokers' or 'host', not both"):
            MqttConnection(host="10.0.0.5", brokers=["10.0.0.6:1883"])
        with pytest.raises(ValidationError, match="give either 'brokers' or 'host' and 'port', not both"):
            MqttConnection(host="10.0.0.5", port=1883, brokers=["10.0.0.6:1883"])

    def test_an_empty_or_repeated_list_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="at least 1 item"):
            MqttConnection(brokers=[])
        with pytest.raises(ValidationError, match="lists a broker twice"):
            MqttConnection(brokers=["a:1883", "b:1883", "a:1883"])

    def test_failover_attempts_is_at_least_one(self) -> None:
        with pytest.raises(ValidationError, match="failover_attempts"):
            MqttConnection(brokers=["a:1883", "b:1883"], failover_attempts=0)

    def test_the_agent_config_names_the_bad_entry(self, tmp_path: Path) -> None:
        from agent.config import load_config
        path = tmp_path / "agent.yaml"
        path.write_text(f"device: {DEVICE}\nstate_dir: {tmp_path / 'state'}\nsources: []\n"
                        "sinks:\n  - kind: mqtt\n    brokers: ['10.0.0.5:1883', '10.0.0.6']\n")
        with pytest.raises(ConfigError, match=re.escape("'10.0.0.6' is not 'host:port'")):
            load_config(path)


class TestSinkFailover:
    def test_the_sink_moves_to_the_next_broker_and_loses_no_event(self, two_brokers: tuple[Broker, Broker],
                                                                   tmp_path: Path) -> None:
        """Events flow through A; A is killed (SIGKILL) while events keep being made; the sink moves to B and
        every event made arrives at A or B (matched by event_id)."""
        first, second = two_brokers
        topic = f"edge/{DEVICE}/events/#"
        config = MqttSinkConfig(kind="mqtt", brokers=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"])
        sink = MqttSink(config, SinkEnv(DEVICE, tmp_path / "state", report=lambda draft: None))
        made: list[str] = []
        with Subscriber(first.port, topic) as on_first, Subscriber(second.port, topic) as on_second:
            try:
                assert sink.connected.wait(10)
                assert sink.stats()["broker"] == f"127.0.0.1:{first.port}"
                for index in range(20):
                    item = outgoing(index)
                    made.append(item.event["event_id"])
                    sink.send(item)
                assert ids_of(on_first.wait_for(20)) >= set(made)

                stop = threading.Event()

                def produce() -> None:  # the tasks go on making events while the broker is gone
                    index = 20
                    while not stop.wait(0.05):
                        item = outgoing(index)
                        made.append(item.event["event_id"])
                        sink.send(item)
                        index += 1

                producer = threading.Thread(target=produce)
                producer.start()
                try:
                    wait_until(lambda: len(made) >= 30)
                    killed = time.monotonic()
                    first.kill()
                    wait_until(lambda: on_second.received, timeout=30, message="no event reached broker B")
                    failover_s = time.monotonic() - killed
                    before = len(made)
                    wait_until(lambda: len(made) >= before + 10)  # and some more once on B
                finally:
                    stop.set()
                    producer.join(5)
                wanted = set(made)
                assert wait_until(lambda: wanted <= ids_of(on_first.received) | ids_of(on_second.received),
                                  timeout=30, message="events lost in the failover")
                stats = sink.stats()
                assert stats["broker"] == f"127.0.0.1:{second.port}"
                assert stats["failovers"] == 1
                assert delivery_metrics(sink) == {
                    ("edge_agent_broker_current", ("mqtt", f"127.0.0.1:{second.port}")): 1.0,
                    ("edge_agent_broker_failovers_total", ("mqtt",)): 1.0}
                assert wait_until(lambda: sink.outbox.pending() == 0)
                print(f"failover: first event on broker B {failover_s:.2f} s after broker A was killed; "
                      f"{len(made)} events made, {len(on_first.received) + len(on_second.received)} received")
                assert failover_s < 15  # 2 failed attempts with 1 s and 2 s backoff, then 1 s to B
            finally:
                sink.close()

    def test_a_hung_broker_is_left_too(self, two_brokers: tuple[Broker, Broker], tmp_path: Path) -> None:
        """A broker that keeps its connections open but says nothing (SIGSTOP): the keepalive notices, the
        attempts get no CONNACK, the sink moves to B with every event."""
        first, second = two_brokers
        topic = f"edge/{DEVICE}/events/#"
        config = MqttSinkConfig(kind="mqtt", brokers=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"],
                                keepalive_s=2)
        sink = MqttSink(config, SinkEnv(DEVICE, tmp_path / "state", report=lambda draft: None))
        with Subscriber(second.port, topic) as on_second:
            try:
                assert sink.connected.wait(10)
                first.pause()
                items = [outgoing(index) for index in range(10)]
                for item in items:
                    sink.send(item)
                wanted = {item.event["event_id"] for item in items}
                assert wait_until(lambda: wanted <= ids_of(on_second.received), timeout=30,
                                  message="the sink did not move to broker B")
                assert sink.stats()["broker"] == f"127.0.0.1:{second.port}"
            finally:
                sink.close()

    def test_a_broker_down_at_start_is_skipped(self, two_brokers: tuple[Broker, Broker], tmp_path: Path) -> None:
        """The first broker of the list is down when the agent starts: the sink connects to the second."""
        first, second = two_brokers
        first.kill()
        topic = f"edge/{DEVICE}/events/#"
        config = MqttSinkConfig(kind="mqtt", brokers=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"],
                                failover_attempts=1)
        sink = MqttSink(config, SinkEnv(DEVICE, tmp_path / "state", report=lambda draft: None))
        with Subscriber(second.port, topic) as on_second:
            try:
                items = [outgoing(index) for index in range(5)]
                for item in items:
                    sink.send(item)
                assert sink.connected.wait(15)
                assert ids_of(on_second.wait_for(5)) >= {item.event["event_id"] for item in items}
                assert sink.stats()["broker"] == f"127.0.0.1:{second.port}"
            finally:
                sink.close()


class TestSourceFailover:
    def test_the_source_moves_to_the_next_broker_and_subscribes_there(self, two_brokers: tuple[Broker, Broker]
                                                                       ) -> None:
        first, second = two_brokers
        config = MqttSourceConfig(kind="mqtt", brokers=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"])
        source = MqttSource(config, SourceEnv(DEVICE, zmq.Context.instance(), 1 << 20))
        received: list[bytes] = []

        def deliver(raw: bytes, ack: Callable[[], None] | None = None) -> None:
            received.append(raw)
            if ack is not None:
                ack()

        subscription = "edge/sensors/+/+"
        source.start(deliver)
        try:
            first.wait_for_subscription(subscription)
            client = publisher(first.port)
            try:
                client.publish("edge/sensors/pump-1/vibration", b"on A", qos=1).wait_for_publish(5)
            finally:
                stop_client(client)
            wait_until(lambda: b"on A" in received)
            first.kill()
            second.wait_for_subscription(subscription, timeout=30)
            client = publisher(second.port)
            try:
                client.publish("edge/sensors/pump-1/vibration", b"on B", qos=1).wait_for_publish(5)
            finally:
                stop_client(client)
            wait_until(lambda: b"on B" in received)
            assert source.stats()["broker"] == f"127.0.0.1:{second.port}"
            assert source.stats()["failovers"] == 1
        finally:
            source.close()


def test_the_operator_console_names_the_broker_after_a_failover() -> None:
    status = {"device": DEVICE, "state": "online", "stats": {"uptime_s": 60, "sinks": {
        "mqtt": {"pending": 0, "broker": "10.0.0.6:1883", "failovers": 1}, "jsonl": {}}}}
    assert status_line(status).endswith("| mqtt on 10.0.0.6:1883 after 1 failover(s)")
    status["stats"]["sinks"]["mqtt"]["failovers"] = 0  # type: ignore[index]
    assert "10.0.0.6" not in status_line(status)
