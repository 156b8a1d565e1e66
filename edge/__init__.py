"""The pure, consensus-critical core of tiyi-edge.

Nothing in this package performs I/O or reads a clock: time, randomness and bytes come in as
arguments, so every function here is deterministic and testable with golden vectors.
"""
