"""The test suite: unit, integration (real Mosquitto, ZeroMQ, ONNX Runtime), fault and fuzz tests."""
