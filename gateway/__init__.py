"""The gateway service: the composition root that wires BLE, journal, MQTT, batching and anchoring."""
