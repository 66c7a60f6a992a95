"""The soak and fuzz harnesses (make soak, make fuzz) in short runs, and the parts they judge by."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.testing import Broker, free_port, stop_client, wait_until
from sensors.errors import WireError
from sensors.mqtt import connect_properties
from sensors.wire import decode
from tests.harness import fuzz, soak
from tests.harness.mutate import MUTATIONS, pool


class TestMutations:
    def test_pool_is_deterministic_and_covers_every_mutation_and_kind(self) -> None:
        """The same seed gives the same inputs; every mutation and every base kind (JPEG and PNG included) occur."""
        first, second = pool(3, 600), pool(3, 600)
        assert first == second
        names = {name.split(":")[0] for name, _ in first}
        kinds = {name.split(":")[1] for name, _ in first}
        assert names == set(MUTATIONS)
        assert kinds == {"vibration", "audio", "frame_raw", "frame_jpeg", "frame_png"}

    def test_malformed_inputs_are_refused_by_the_decoder(self) -> None:
        """Truncated, garbage and bad-rate inputs never decode: they test the agent's rejection path."""
        for name, payload in pool(4, 600):
            if name.split(":")[0] in {"truncate", "garbage"} or name == "bad_rate:vibration":
                with pytest.raises(WireError):
                    decode(payload)


class TestSoakComparison:
    def event(self, sensor: str, when: str) -> dict[str, str]:
        return {"sensor": sensor, "task": "probe", "type": "energy_high", "source_time": when}

    def test_counts_lost_duplicated_and_out_of_order_per_topic(self) -> None:
        """Matched on sensor, task, type and source time: a missing key is lost, a repeat a duplicate, and a first
        delivery older than one before it on the same topic is out of order."""
        times = [f"2026-01-01T00:00:0{second}.000000Z" for second in range(4)]
        expected = {("a", "probe", "energy_high", when) for when in times}
        events = [self.event("a", times[0]), self.event("a", times[2]), self.event("a", times[1]),
                  self.event("a", times[2]), self.event("b", times[0])]
        table = soak.compare(expected, events)
        assert set(table) == {"a/energy_high"}
        figures = table["a/energy_high"]
        assert (figures.expected, figures.lost, figures.duplicated, figures.out_of_order) == (4, 1, 1, 1)
        assert figures.unexpected == 0  # b is not an expected topic

    def window(self, index: int) -> str:
        return soak.iso_time(soak.BASE_NS + index * soak.CHUNKS_PER_WINDOW * soak.CHUNK_NS)

    def test_a_loss_whose_input_never_reached_the_agent_is_counted_upstream(self) -> None:
        """A lost window no agent run received whole is lost upstream; a lost window whose chunks all reached one
        run stays the agent's loss."""
        expected = {("a", "probe", "energy_high", self.window(0)), ("a", "probe", "energy_high", self.window(1))}
        runs = [{("a", seq) for seq in range(2 * soak.CHUNKS_PER_WINDOW) if seq != soak.CHUNKS_PER_WINDOW + 1}]
        figures = soak.compare(expected, [], runs)["a/energy_high"]
        assert (figures.lost, figures.lost_upstream) == (1, 1)

    def test_input_is_read_from_each_agent_runs_log(self, tmp_path: Path) -> None:
        """Each run's debug log names the sensor messages it received. A window whose chunks never all reached one
        run is upstream's loss even though the agent reported no gap: here the first window's last chunk came
        only after a restart (the broker lost the session holding the first three), and the second window's
        last chunk never came before the run ended. The third window reached the second run whole."""
        def line(sensor: str, seq: int) -> str:
            return json.dumps({"sensor": sensor, "seq": seq, "event": "sensor message", "level": "debug"})

        per_window = soak.CHUNKS_PER_WINDOW
        logs = {"run-00000": [line("a", seq) for seq in range(per_window - 1)] + ['{"sensor": "a", "se'],
                "run-00001": [line("a", seq) for seq in range(per_window - 1, 2 * per_window - 1)]
                + [line("b", seq) for seq in range(2 * per_window, 3 * per_window)]}
        for run, lines in logs.items():
            (tmp_path / run).mkdir()
            (tmp_path / run / "agent.log").write_text("\n".join(lines) + "\n")
        runs = soak.received_by_run(soak.AgentProcess(tmp_path, {}))
        assert len(runs) == 2 and ("a", per_window - 1) in runs[1]
        assert soak.input_missing(("a", "probe", "energy_high", self.window(0)), runs)
        assert soak.input_missing(("a", "probe", "energy_high", self.window(1)), runs)
        assert not soak.input_missing(("b", "probe", "energy_high", self.window(2)), runs)

    def test_round_input_moves_sequence_and_time_on(self, tmp_path: Path) -> None:
        """Round n replays the same recording with its sequence numbers and times moved on by n rounds, and the
        reference's event times move by the same amount."""
        recording = soak.write_recording(tmp_path / "r.mcap")
        first, third = soak.round_input(recording, 0), soak.round_input(recording, 2)
        assert len(first) == len(third) == soak.CHUNKS * len(soak.SENSORS)
        a, c = decode(first[0][1]), decode(third[0][1])
        assert c.seq - a.seq == 2 * soak.STEP
        assert c.timestamp_ns - a.timestamp_ns == 2 * soak.STEP * soak.CHUNK_NS
        key = ("a", "probe", "energy_high", "2023-11-14T22:13:20.000000Z")
        assert soak.parse_ns(soak.shift_key(key, 2)[3]) - soak.parse_ns(key[3]) == 2 * soak.STEP * soak.CHUNK_NS
        assert soak.round_of(soak.shift_key(key, 2)) - soak.round_of(key) == 2


def session_present(port: int, client_id: str, subscribe: str | None = None) -> bool:
    """Connect with a persistent session (subscribing to ``subscribe`` if given); whether the broker had one."""
    done, present = threading.Event(), []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, *_: object) -> None:
        present.append(flags.session_present)
        if subscribe is None:
            done.set()
        else:
            client.subscribe(subscribe, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: done.set()
    client.connect("127.0.0.1", port, clean_start=False, properties=connect_properties(3600))
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK or SUBACK"
    finally:
        stop_client(client)
    return bool(present[0])


class TestSoakBroker:
    def test_the_soak_broker_keeps_sessions_across_a_sigkill(self, tmp_path: Path) -> None:
        """The soak's broker saves its database every autosave interval, also when the harness runs as root (Mosquitto
        would drop to its own user and fail to write), so a SIGKILL loses only what came since the last save and a
        persistent session, here the agent's, is still there after the restart."""
        broker = Broker(tmp_path, free_port())
        soak.broker_config(broker, tmp_path, autosave_s=1)
        broker.start()
        try:
            assert not session_present(broker.port, "soak-agent-in", subscribe="edge/sensors/+/+")
            saves = broker.log.read_text(errors="replace").count("Saving in-memory database")
            wait_until(lambda: broker.log.read_text(errors="replace").count("Saving in-memory database") > saves,
                       15, 0.05, "the broker never tried to save")
            log = broker.log.read_text(errors="replace")
            assert "Error saving" not in log, log
            broker.kill()
            broker.start()
            assert session_present(broker.port, "soak-agent-in")
        finally:
            broker.stop()


def test_soak_smoke(tmp_path: Path) -> None:
    """A few randomised fault rounds run end to end: every round's events are expected and counted, the agent
    does not crash. (Losses are reported, not asserted: on a branch without the delivery fixes of issue 9 an
    agent SIGKILL can lose input that was acknowledged before it was used; ``make soak`` fails on them.)"""
    result = soak.soak(tmp_path, rounds=3, duration_s=120, seed=2, autosave_s=1, settle_s=2)
    assert result.rounds == 3 and sum(result.faults.values()) == 3
    assert sum(figures.expected for figures in result.table.values()) == 3 * 4 * len(soak.SENSORS)
    assert result.crashes == 0, result.exit_codes
    assert result.broker_save_errors == 0  # else its SIGKILLs lose every session (Mosquitto run as root)
    assert "| all |" in soak.render(result)


def test_fuzz_smoke(tmp_path: Path) -> None:
    """A few thousand fuzz inputs over both transports: no crash, the valid streams still produce events."""
    result = fuzz.run(tmp_path, inputs=3000, seed=1, mqtt_share=0.2, valid_every=50,
                      skip=frozenset({"tiny_rate"}))
    assert result.inputs == 3000 and result.mqtt_inputs > 0
    assert result.crashes == 0, result.exit_codes
    assert result.valid_alive_at_end and all(result.valid_events.values())
    assert "inputs/s" in fuzz.render(result)


def test_fuzz_tiny_rates_do_not_crash_the_agent(tmp_path: Path) -> None:
    """Vibration and audio chunks with positive but tiny sample rates (5e-324 ...) are refused, not fatal."""
    result = fuzz.run(tmp_path, inputs=300, seed=1, mqtt_share=0.0, valid_every=50,
                      skip=frozenset(MUTATIONS) - {"tiny_rate"})
    assert result.crashes == 0, result.exit_codes


