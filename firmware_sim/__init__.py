"""Simulated BLE devices that produce the real GATT byte formats from plausible signals."""
