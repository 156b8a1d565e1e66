"""One error root for anchoring."""


class AnchoringError(Exception):
    """Root of every error raised by :mod:`anchoring`."""


class ChainUnavailable(AnchoringError, ConnectionError):
    """The chain node cannot be reached or did not answer; retry later."""


class TransactionFailed(AnchoringError):
    """The chain rejected a transaction (reverted, underpriced, bad nonce that is not ours to fix)."""


class AlreadyAnchored(AnchoringError):
    """The contract already holds this root: the anchor exists, look it up instead of sending again."""


class ReceiptError(AnchoringError, ValueError):
    """An anchor receipt is malformed."""


class CaptureError(AnchoringError, ValueError):
    """A capture file is truncated or corrupt."""
