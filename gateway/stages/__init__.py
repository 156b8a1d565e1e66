"""The pipeline's stages, each with its own state and one journal-error policy; ``gateway.service.Gateway``
wires, starts, drains and stops them.

    ingest ──records──► delivery (data topics, acks)
       └──wake──► batching (batches, roll-ups) ──wake──► anchoring (one driver per target)
                         └─► announcements (manifests, receipts, roll-ups) ──acked──► head (signed, retained)
"""
