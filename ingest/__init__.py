"""The platform side: subscribe to gateway streams, verify them with the engine in ``anchoring``, store them in
PostgreSQL, export them. Depends on ``edge`` and ``anchoring`` only (never on ``gateway``): install it with the
``platform`` extra, without the gateway's radio stack."""
