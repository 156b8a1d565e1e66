"""One error root for anchoring."""


class AnchoringError(Exception):
    """Root of every error raised by :mod:`anchoring`."""


class ChainUnavailable(AnchoringError, ConnectionError):
    """The chain node cannot be reached or did not answer; retry later."""


class TransactionFailed(AnchoringError):
    """The chain rejected a transaction (reverted, underpriced, bad nonce that is not ours to fix)."""


class StaleTransaction(TransactionFailed):
    """A stored signed transaction can never be mined (its nonce went to another transaction, or its block
    limit passed): prepare a new one. The contract's duplicate check keeps that from anchoring twice."""


class AlreadyAnchored(AnchoringError):
    """The contract already holds this root: the anchor exists, look it up instead of sending again."""


class ReceiptError(AnchoringError, ValueError):
    """An anchor receipt is malformed."""


class CaptureError(AnchoringError, ValueError):
    """A capture file is truncated or corrupt."""


class MalformedReply(AnchoringError, ValueError):
    """A chain node answered with something its protocol does not define (bad JSON, hex, types, ABI data, or a
    registry the verifier refuses to read in full): the node is broken or hostile, and nothing in it is used."""


class MalformedTransaction(TransactionFailed, ValueError):
    """A transaction's bytes break the chain's encoding rules (or a signer produced values that would)."""
