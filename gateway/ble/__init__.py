"""BLE collection: the bleak adapter and, for tests and the demo, a bleak backend over Bumble."""
