"""Agent benchmarks as ratios against bare loops doing the same work, in one run.

- inference: the agent's task worker (decode, queue, windowing, model, bookkeeping) vs a
  bare ``InferenceSession.run`` loop on the same model and inputs, for a >= 5 ms model and a
  tiny one (added microseconds per call);
- MQTT ingest: the agent's MQTT source + decoder vs a bare paho subscriber, same broker, same
  publisher (a separate process) and QoS;
- ZeroMQ ingest: the agent's ZeroMQ source + decoder vs a bare pyzmq PULL loop;
- decode: ``sensors.wire.decode`` vs ``numpy.frombuffer`` on the same payload;
- idle CPU of the daemon with no input.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import paho.mqtt.client as mqtt
import yaml
import zmq
from onnx import TensorProto, helper, numpy_helper

from agent.config import parse_config
from agent.events import EventDraft, ModelRef
from agent.logs import configure_logging
from agent.pipeline import Dispatcher, RejectionReporter
from agent.stats import Stats
from agent.tasks import register_task
from agent.tasks.base import Task, TaskConfig, TaskContext
from agent.windowing import Window
from models.runtime import Manifest, load_model, write_manifest
from models.runtime.manifest import TensorSpec
from sensors.sources import SourceEnv
from sensors.sources.mqtt import MqttSource
from sensors.sources.zmq import ZmqSource
from sensors.wire import Kind, SensorMessage, decode, encode
from tests.conftest import Broker, free_port

REPO = Path(__file__).resolve().parents[2]


def matmul_model(folder: Path, layers: int, width: int, rows: int) -> Path:
    """A chain of MatMul+Relu layers (rows x width input); heavy enough to take milliseconds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for index in range(layers):
        weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes += [helper.make_node("MatMul", [current, f"w{index}"], [f"m{index}"]),
                  helper.make_node("Relu", [f"m{index}"], [f"r{index}"])]
        current = f"r{index}"
    nodes.append(helper.make_node("ReduceMax", [current], ["score"], keepdims=0))
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [rows, width])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    manifest = Manifest(name=f"bench-{layers}x{width}", task="bench", version="1",
                        inputs=[TensorSpec(name="x", shape=[rows, width])],
                        outputs=[TensorSpec(name="score", shape=[])])
    return write_manifest(manifest, folder / "manifest.yaml")


class BenchTask(Task):
    """Runs the model on each window reshaped to the model input; never raises events."""

    name: ClassVar[str] = "bench"
    kinds: ClassVar[frozenset[Kind]] = frozenset({Kind.VIBRATION})

    def __init__(self, config: TaskConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        assert config.model is not None
        self.model = context.load_model(config.model)
        self.shape = tuple(int(d) for d in self.model.manifest.inputs[0].shape)

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        assert isinstance(item, Window)
        self.model.run({"x": item.samples.reshape(self.shape)})
        return []

    def models(self) -> list[ModelRef]:
        return [ModelRef(self.model.manifest.name, self.model.manifest.version)]


register_task(BenchTask)


def inference(manifest: Path, calls: int, rounds: int = 3) -> dict[str, float]:
    """Agent worker vs bare session on the same model and inputs, alternated; best round of each."""
    model = load_model(manifest)
    rows, width = (int(d) for d in model.manifest.inputs[0].shape)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((rows, width)).astype(np.float32) for _ in range(calls)]
    raws = [encode(SensorMessage("bench-1", Kind.VIBRATION, seq, 1_700_000_000 * 10**9 + seq, x.reshape(-1, 1),
                                 float(rows * width))) for seq, x in enumerate(inputs)]
    bare_s, agent_s = float("inf"), float("inf")
    for _ in range(rounds):
        bare_s = min(bare_s, _bare_inference(model, inputs))
        agent_s = min(agent_s, _agent_inference(manifest, raws))
    model.close()
    return {"bare_ms_per_call": bare_s / calls * 1e3, "agent_ms_per_call": agent_s / calls * 1e3,
            "throughput_ratio": bare_s / agent_s, "added_us_per_call": (agent_s - bare_s) / calls * 1e6}


def _bare_inference(model: Any, inputs: list[np.ndarray]) -> float:
    session = model.backend.session
    session.run(None, {"x": inputs[0]})
    start = time.perf_counter()
    for x in inputs:
        session.run(None, {"x": x})
    return time.perf_counter() - start


def _agent_inference(manifest: Path, raws: list[bytes]) -> float:
    """Messages submitted as a source would; timed until the worker processed them all."""
    from agent.daemon import Agent

    calls = len(raws)
    state = Path(tempfile.mkdtemp())
    config = parse_config({"device": "bench", "state_dir": str(state), "log": {"level": "error"},
                           "sources": [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}"}],
                           "sinks": [{"kind": "jsonl", "path": str(state / "events.jsonl")}],
                           "tasks": {"bench": {"model": str(manifest), "window_s": 1.0, "hop_s": 1.0,
                                               "queue_size": calls + 1}}})
    agent = Agent(config)
    agent.start()
    worker = agent.workers["bench"]
    worker.task.process(_first_window(raws[0]))  # warm up the session
    start = time.perf_counter()
    for raw in raws:
        agent.dispatcher.submit(raw)
    while agent.stats.tasks["bench"].processed < calls:
        time.sleep(0.0002)
    elapsed = time.perf_counter() - start
    agent.stop_requested.set()
    agent.stop()
    return elapsed


def _first_window(raw: bytes) -> Window:
    message = decode(raw)
    return Window(message.sensor_id, message.kind, message.samples, message.sample_rate, message.timestamp_ns, 0)


def _payloads(count: int) -> list[bytes]:
    """Consecutive 256-sample chunks of one sensor (what a real sensor sends)."""
    data = np.zeros((256, 1), np.float32)
    return [encode(SensorMessage("bench-1", Kind.VIBRATION, seq, 1 + seq, data, 1000.0)) for seq in range(count)]


def _mqtt_publisher(port: int, count: int, ready: Any) -> None:
    payloads = _payloads(count)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait()
    infos = [client.publish("edge/sensors/vibration/bench-1", payload, qos=1) for payload in payloads]
    infos[-1].wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _count_until(counter: Any, count: int, timeout: float = 120) -> float:
    """Seconds until counter() reaches count, timed from its first message."""
    deadline = time.monotonic() + timeout
    while counter() == 0 and time.monotonic() < deadline:
        time.sleep(0.0005)
    start = time.perf_counter()
    while counter() < count and time.monotonic() < deadline:
        time.sleep(0.001)
    if counter() < count:
        raise RuntimeError(f"only {counter()} of {count} messages arrived")
    return time.perf_counter() - start


def mqtt_ingest(count: int, rounds: int = 3) -> dict[str, float]:
    """Bare paho subscriber vs the agent's MQTT source + decoder, alternated, each on a fresh broker."""
    context = multiprocessing.get_context("spawn")
    bare_s = min(_mqtt_round(context, count, agent=False) for _ in range(rounds))
    agent_s = min(_mqtt_round(context, count, agent=True) for _ in range(rounds))
    return {"bare_msgs_per_s": count / bare_s, "agent_msgs_per_s": count / agent_s, "ratio": bare_s / agent_s}


def _mqtt_round(context: Any, count: int, agent: bool) -> float:
    broker = Broker(Path(tempfile.mkdtemp()), free_port()).start()
    try:
        return (_agent_mqtt if agent else _bare_mqtt)(context, broker.port, count)
    finally:
        broker.stop()


def _bare_mqtt(context: Any, port: int, count: int) -> float:
    received = [0]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(*_: Any) -> None:
        received[0] += 1

    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.subscribe("edge/sensors/+/+", qos=1)
    client.loop_start()
    subscribed.wait(5)
    elapsed = _run_publisher(context, port, count, lambda: received[0])
    client.disconnect()
    client.loop_stop()
    return elapsed


def _agent_mqtt(context: Any, port: int, count: int) -> float:
    stats = Stats()
    dispatcher = Dispatcher(stats, 1 << 24, RejectionReporter(lambda task, draft: None))
    source_config = parse_config({"device": "bench", "sources": [{"kind": "mqtt", "host": "127.0.0.1", "port": port}],
                                  "sinks": [{"kind": "console"}], "tasks": {}}).sources[0]
    source = MqttSource(source_config, SourceEnv("bench", zmq.Context.instance(), 1 << 24))
    source.start(dispatcher.submit)
    source.connected.wait(5)
    time.sleep(0.3)
    elapsed = _run_publisher(context, port, count, lambda: stats.sensors["bench-1"].received)
    source.close()
    return elapsed


def _run_publisher(context: Any, port: int, count: int, counter: Any) -> float:
    ready = context.Event()
    process = context.Process(target=_mqtt_publisher, args=(port, count, ready))
    process.start()
    time.sleep(0.5)
    ready.set()
    elapsed = _count_until(counter, count)
    process.join(30)
    return elapsed


def _zmq_pusher(endpoint: str, count: int) -> None:
    payloads = _payloads(count)
    socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.connect(endpoint)
    time.sleep(0.3)
    for payload in payloads:
        socket.send(payload)
    socket.close(linger=30_000)


def zmq_ingest(count: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.bind(endpoint)
    bare_s = _bare_pull(pull, context, endpoint, count, parse=False)
    parse_s = _bare_pull(pull, context, endpoint, count, parse=True)
    pull.close()

    stats = Stats()
    dispatcher = Dispatcher(stats, 1 << 24, RejectionReporter(lambda task, draft: None))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    source_config = parse_config({"device": "bench", "sources": [{"kind": "zmq", "endpoint": endpoint,
                                                                   "receive_hwm": 100_000}],
                                  "sinks": [{"kind": "console"}], "tasks": {}}).sources[0]
    source = ZmqSource(source_config, SourceEnv("bench", zmq.Context.instance(), 1 << 24))
    source.start(dispatcher.submit)
    process = context.Process(target=_zmq_pusher, args=(endpoint, count))
    process.start()
    agent_s = _count_until(lambda: stats.sensors["bench-1"].received, count)
    process.join(30)
    source.close()
    return {"bare_msgs_per_s": count / bare_s, "bare_parse_msgs_per_s": count / parse_s,
            "agent_msgs_per_s": count / agent_s, "ratio_vs_receive_only": bare_s / agent_s,
            "ratio_vs_receive_and_frombuffer": parse_s / agent_s}


def _bare_pull(pull: Any, context: Any, endpoint: str, count: int, parse: bool) -> float:
    """A bare PULL loop; with ``parse``, it also does the least a consumer must: frombuffer the samples."""
    process = context.Process(target=_zmq_pusher, args=(endpoint, count))
    process.start()
    first = pull.recv()
    offset = len(first) - 256 * 4 - 4
    start = time.perf_counter()
    for _ in range(count - 1):
        frame = pull.recv()
        if parse:
            np.frombuffer(frame, np.float32, 256, offset)
    elapsed = time.perf_counter() - start
    process.join(30)
    return elapsed


def decode_cost() -> dict[str, float]:
    data = np.random.default_rng(2).standard_normal((2000, 1)).astype(np.float32)
    raw = encode(SensorMessage("bench-1", Kind.VIBRATION, 0, 1, data, 20_000.0))
    payload = raw[-(data.nbytes + 4):-4]
    number = 20_000
    ours = min(timeit.repeat(lambda: decode(raw), number=number, repeat=3)) / number
    bare = min(timeit.repeat(lambda: np.frombuffer(payload, np.float32).reshape(2000, 1), number=number,
                             repeat=3)) / number
    return {"decode_us": ours * 1e6, "frombuffer_us": bare * 1e6, "ratio": ours / bare}


def idle_cpu(seconds: float = 10.0) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp())
    config = {"device": "idle", "state_dir": str(directory / "state"), "log": {"level": "warning"},
              "sources": [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}"}],
              "sinks": [{"kind": "jsonl", "path": "events.jsonl"}],
              "tasks": {"vibration": {"scorer": "mahalanobis"}}}
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(path)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5)  # let it import and start
    before = _cpu_seconds(process.pid)
    time.sleep(seconds)
    used = _cpu_seconds(process.pid) - before
    process.terminate()
    process.wait(30)
    return {"idle_cpu_percent_of_one_core": used / seconds * 100}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run() -> dict[str, Any]:
    configure_logging("warning")
    folder = Path(tempfile.mkdtemp())
    results = {
        "inference_heavy": inference(matmul_model(folder / "heavy", layers=20, width=1024, rows=16), calls=150),
        "inference_tiny": inference(matmul_model(folder / "tiny", layers=1, width=16, rows=4), calls=5000),
        "mqtt_ingest": mqtt_ingest(20_000),
        "zmq_ingest": zmq_ingest(50_000),
        "decode": decode_cost(),
        "idle": idle_cpu(),
    }
    for name, figures in results.items():
        print(f"{name:16s} " + "  ".join(f"{key}={value:.3g}" for key, value in figures.items()), flush=True)
    return results
