"""Anchoring Merkle roots on the alliance chain: contract, chain clients, receipts, verification."""
