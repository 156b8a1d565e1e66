"""One error root for the gateway service."""


class GatewayError(Exception):
    """Root of every error raised by :mod:`gateway`."""


class ConfigError(GatewayError, ValueError):
    """The configuration is invalid; the message names the setting and the file."""


class JournalError(GatewayError, OSError):
    """The durable journal could not complete an operation; nothing was half-written."""


class JournalFull(JournalError):
    """The journal's disk is full: new data is refused until space returns."""


class PublishError(GatewayError, ConnectionError):
    """A message could not be delivered to the broker (it stays in the journal and is re-sent)."""


class BrokerUnavailable(GatewayError, ConnectionError):
    """The broker could not be reached, or refused us (credentials, TLS trust, a refused subscription)."""
