"""Trust roots: which key may sign for which gateway, decided by the caller's settings, never by a message.

Three sources, strongest first:

- the **on-chain registry**: the key (and anchoring account) an approved operator registered for the gateway,
  judged at the block the chain says a batch was anchored in;
- keys **pinned per gateway** by the platform (a bare pinned key binds to the only gateway in view);
- **trust on first use** of the key a gateway announces itself, only when the caller asked for it; results that
  rest on it are reported as such and never count as verified.

Pure: the registry arrives as a lookup function, keys as ``Verifier`` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from anchoring.chain import AnchorInfo, GatewayEntry
from anchoring.errors import AnchoringError
from edge.errors import EdgeError
from edge.signing import Verifier


class KeySource(StrEnum):
    REGISTRY = "the on-chain gateway registry"
    PINNED = "pinned"
    TOFU = "announced by the gateway: trust on first use"


@dataclass(frozen=True, slots=True)
class TrustedKey:
    verifier: Verifier
    source: KeySource
    operator: bytes | None = None  # with the registry: the operator account that vouched for the key


class TrustPolicy:
    """Answers "may this key sign for this gateway here?" from exactly one configured trust root."""

    def __init__(
        self,
        *,
        pinned: Mapping[str, Sequence[Verifier]] | None = None,
        unbound: Sequence[Verifier] = (),
        registry: Callable[[str], GatewayEntry | None] | None = None,
        point_verifier: Callable[[bytes], Verifier] | None = None,
        operator: bytes | None = None,
        tofu: Callable[[str], Verifier] | None = None,
    ) -> None:
        """``registry`` needs ``point_verifier`` (a verifier from a registered 64-byte X‖Y key); ``operator``
        requires that operator to have registered the gateway; ``tofu`` loads an announced PEM key."""
        roots = sum((bool(pinned) or bool(unbound), registry is not None, tofu is not None))
        if roots != 1:
            raise ValueError("exactly one trust root: pinned keys, the registry, or trust on first use")
        if registry is not None and point_verifier is None:
            raise ValueError("the registry needs a point_verifier")
        if operator is not None and registry is None:
            raise ValueError("an operator can only be required with the registry")
        self._pinned = {gw: list(keys) for gw, keys in (pinned or {}).items()}
        self._unbound = list(unbound)
        self._registry = registry
        self._point_verifier = point_verifier
        self._operator = operator
        self._tofu = tofu
        self._entries: dict[str, GatewayEntry | str | None] = {}

    @property
    def uses_registry(self) -> bool:
        return self._registry is not None

    @property
    def is_tofu(self) -> bool:
        return self._tofu is not None

    def entry(self, gw: str) -> GatewayEntry | str:
        """The gateway's registry entry, or why it cannot be used (asked once per gateway)."""
        assert self._registry is not None
        if gw not in self._entries:
            try:
                self._entries[gw] = self._registry(gw)
            except AnchoringError as exc:
                self._entries[gw] = f"the registry could not be read: {exc}"
        got = self._entries[gw]
        if got is None:
            return f"{gw} is not in the on-chain registry"
        if isinstance(got, str):
            return got
        if self._operator is not None and got.operator != self._operator:
            return f"{gw} was registered by operator 0x{got.operator.hex()}, not the required 0x{self._operator.hex()}"
        return got

    def anchorers(self, gw: str) -> set[bytes]:
        """Every account the registry ever named to anchor for ``gw`` (empty without a registry)."""
        if self._registry is None:
            return set()
        entry = self.entry(gw)
        return set() if isinstance(entry, str) else {k.anchorer for k in entry.keys}

    def counts_anchor(self, gw: str, anchorer: bytes) -> bool:
        """Whether an anchor by ``anchorer`` may be the one ``gw``'s batch is judged at. Anyone may anchor any root
        (the contract keys anchors by account), so with the registry only an account it names for ``gw`` counts; a
        gateway the registry does not hold is refused on its key whichever anchor is used. Without the registry
        every confirmed anchor counts (the earliest is used)."""
        if self._registry is None:
            return True
        names = self.anchorers(gw)
        return not names or anchorer in names

    def key_for(
        self, gw: str, key_id: str, anchor: AnchorInfo | None, gateways_in_view: int, announced_pem: str | None = None
    ) -> TrustedKey | str:
        """The trusted verifier for ``key_id`` signing for ``gw``, or why there is none.

        ``anchor`` is the anchor *as the chain recorded it* (never a receipt's claim). With the registry, the key
        must have been registered for ``gw``, with the anchor's account, at the anchor's block; a signature with
        no confirmed anchor is judged by the key valid now."""
        if self._registry is not None:
            return self._from_registry(gw, key_id, anchor)
        if self._tofu is not None:
            if announced_pem is None:
                return f"{gw} announced no key"
            try:
                v = self._tofu(announced_pem)
            except (EdgeError, ValueError):
                return f"{gw} announced a key that does not parse"
            return TrustedKey(v, KeySource.TOFU) if v.key_id == key_id else f"{gw} announced another key"
        keys = self._pinned.get(gw)
        if keys is None and self._unbound:
            if gateways_in_view != 1:
                return (
                    f"a key pinned without a gateway id binds to a single gateway, and {gateways_in_view} are in "
                    "view: pin keys per gateway (--key GW=FILE)"
                )
            keys = self._unbound
        for v in keys or ():
            if v.key_id == key_id:
                return TrustedKey(v, KeySource.PINNED)
        return f"key {key_id} is not pinned for {gw}"

    def _from_registry(self, gw: str, key_id: str, anchor: AnchorInfo | None) -> TrustedKey | str:
        entry = self.entry(gw)
        if isinstance(entry, str):
            return entry
        assert self._point_verifier is not None
        for period in entry.periods():
            if anchor is None:
                if not period.open:
                    continue
            elif not period.covers(anchor.block_number) or period.anchorer != anchor.anchorer:
                continue
            try:
                v = self._point_verifier(period.key)
            except (EdgeError, ValueError):
                continue  # not a point on the curve: vouches for nothing
            if v.key_id == key_id:
                return TrustedKey(v, KeySource.REGISTRY, entry.operator)
        if anchor is None:
            return f"key {key_id} is not {gw}'s current key in the registry" + (
                " (the gateway is revoked)" if entry.revoked else ""
            )
        return (
            f"key {key_id} with anchoring account 0x{anchor.anchorer.hex()} was not registered for {gw} at "
            f"block {anchor.block_number}"
        )
