"""agent.testing, the helpers users import to test their deployments: no test-only dependency, bounded waits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from agent.testing import Broker, Subscriber, free_port, publisher, stop_client, wait_until, zmq_socket

REPO = Path(__file__).resolve().parents[1]


def test_imports_without_the_test_extra() -> None:
    """Importing agent.testing pulls in no pytest, hypothesis or training package (the agent runs without them)."""
    check = ("import sys, agent.testing\n"
             "loaded = {'pytest', 'hypothesis', 'onnx', 'torch', 'jsonschema'} & set(sys.modules)\n"
             "print(sorted(loaded))")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_wait_until_returns_the_value_or_times_out() -> None:
    """The first true value comes back; a condition never met raises TimeoutError with the message, in time."""
    calls = iter([0, None, "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0) == "ready"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout=0.2, message="never")
    assert time.monotonic() - started < 2


def test_zmq_send_without_a_peer_times_out() -> None:
    """A PUSH socket with nobody to take its messages raises zmq.Again instead of blocking for ever."""
    with zmq_socket(zmq.PUSH, timeout_ms=200) as push, pytest.raises(zmq.Again):
        push.send(b"nobody listens")


def test_broker_paused_and_resumed_then_restarted_on_its_port(tmp_path: Path) -> None:
    """A paused broker delivers once resumed; a killed one comes back on the same port."""
    broker = Broker(tmp_path, free_port()).start()
    try:
        with Subscriber(broker.port, "t/#") as subscriber:
            broker.wait_for_subscription("t/#")
            client = publisher(broker.port)
            try:
                broker.pause()
                client.publish("t/1", b"held", qos=1)
                assert subscriber.wait_for(1, timeout=0.5) == []
                broker.resume()
                assert subscriber.wait_for(1) == [("t/1", b"held")]
            finally:
                stop_client(client)
        broker.kill()
        broker.start()
        with Subscriber(broker.port, "t/#"):
            broker.wait_for_subscription("t/#", count=2)
    finally:
        broker.stop()
