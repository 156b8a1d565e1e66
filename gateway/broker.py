"""An embedded MQTT broker for ``tiyi demo`` (amqtt, pure Python, in the running event loop).

It needs no system package, which is what a zero-configuration demo wants. It is not a production
broker: it speaks MQTT 3.1.1 only (our publisher falls back automatically) and is about 3x slower than
Mosquitto here. Production gateways point at Mosquitto or EMQX (see deploy/).
"""

from __future__ import annotations

import logging
import socket

from gateway.errors import GatewayError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self._broker: object | None = None

    async def start(self) -> str:
        try:
            from amqtt.broker import Broker
            from amqtt.contexts import BrokerConfig
        except ImportError as exc:  # pragma: no cover - the [sim] extra installs it
            raise GatewayError(
                "the embedded broker needs amqtt: pip install 'tiyi-edge[sim]', or pass --broker"
            ) from exc
        # amqtt logs every connection at INFO; the demo's own progress line says what matters.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self.port = self.port or _free_port()
        config = BrokerConfig.from_dict(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 50}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        return f"mqtt://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()  # type: ignore[attr-defined]
            self._broker = None
