"""``EvmChainClient``: anchoring over the Ethereum JSON-RPC through web3.py.

The same class serves any provider: ``Web3(HTTPProvider(url))`` for ganache, FISCO BCOS >= 3.9's Web3
RPC (non-国密 chains), Besu or Quorum, and ``Web3(EthereumTesterProvider())`` in-process. The gateway
signs its own legacy (type-0) transactions with explicit gas, which every one of these accepts, and
pays whatever ``eth_gasPrice`` says (0 on FISCO-like chains).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.logs import DISCARD
from web3.types import TxParams

from anchoring.chain import (
    MAX_KEY_HISTORY,
    SM2_POINT_SIZE,
    AnchorInfo,
    AnchorKind,
    GatewayEntry,
    KeyRecord,
    SignedTx,
    TxReceipt,
    anchor_artifact,
)
from anchoring.errors import AlreadyAnchored, AnchoringError, ChainUnavailable, StaleTransaction, TransactionFailed

log = logging.getLogger("tiyi.chain")
T = TypeVar("T")

ANCHOR_GAS = 250_000
ANCHORED_TOPIC = Web3.keccak(text="Anchored(bytes32,address,uint8,string,uint64,uint32,uint256)")
DEPLOY_GAS = 3_000_000
RPC_TIMEOUT_S = 10
GAS_PRICE_TTL_S = 30.0  # re-read eth_gasPrice at most this often (0 and constant on FISCO-like chains)


def _guard(fn: Callable[[], T]) -> T:
    """Map transport failures to ``ChainUnavailable`` so callers back off and retry."""
    try:
        return fn()
    except AnchoringError:
        raise
    except (OSError, TimeoutError) as exc:
        raise ChainUnavailable(f"chain node unreachable: {_root_cause(exc)}") from exc
    except Exception as exc:
        # requests' ConnectionError derives from OSError; anything else from the transport is a node problem.
        name = type(exc).__module__
        if name.startswith(("requests", "urllib3", "aiohttp")):
            raise ChainUnavailable(f"chain node unreachable: {_root_cause(exc)}") from exc
        raise


def _root_cause(exc: BaseException) -> str:
    """The innermost OS-level reason (e.g. "connection refused") instead of urllib3's nested retry text."""
    seen: BaseException | None = exc
    reason = str(exc)
    for _ in range(16):  # bounded: cause chains can loop
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            reason = seen.strerror.lower()
        if isinstance(seen, TimeoutError) and not isinstance(seen, OSError):
            reason = "timed out"
        nested = getattr(seen, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return reason


def _address(value: str) -> bytes:
    return bytes.fromhex(str(value)[2:])


def _checksum(account: bytes) -> str:
    return Web3.to_checksum_address("0x" + account.hex())


class EvmChainClient:
    def __init__(
        self, w3: Web3, account_key: bytes, contract: str | bytes | None = None, gas_limit: int = ANCHOR_GAS
    ) -> None:
        self.w3 = w3
        self._account = Account.from_key(account_key)
        self.gas_limit = gas_limit
        self._chain_id: int = _guard(lambda: int(w3.eth.chain_id))
        self._nonce: int | None = None
        self._price: tuple[int, float] | None = None  # gas price and when it was read
        art = anchor_artifact()
        self._abi = art["abi"]
        if contract is None:
            address = self.deploy()
        else:
            address = contract if isinstance(contract, str) else "0x" + contract.hex()
        self._contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=self._abi)

    @classmethod
    def connect(cls, url: str, account_key: bytes, contract: str | bytes | None = None) -> EvmChainClient:
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
        return cls(w3, account_key, contract)

    @classmethod
    def reader(cls, url: str, contract: str | bytes) -> EvmChainClient:
        """A read-only client for verification: a throwaway key that never signs anything."""
        return cls.connect(url, secrets.token_bytes(32), contract)

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def contract(self) -> bytes:
        return bytes.fromhex(self._contract.address[2:])

    @property
    def account(self) -> bytes:
        return bytes.fromhex(self._account.address[2:])

    @property
    def account_address(self) -> str:
        return str(self._account.address)

    @property
    def account_key(self) -> bytes:
        """The account's private key (for tests and tools that open a second client on the same account)."""
        return bytes(self._account.key)

    # ------------------------------------------------------------------ transactions
    def _gas_price(self) -> int:
        now = time.monotonic()
        if self._price is None or now - self._price[1] > GAS_PRICE_TTL_S:
            self._price = (_guard(lambda: int(self.w3.eth.gas_price)), now)
        return self._price[0]

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = _guard(lambda: int(self.w3.eth.get_transaction_count(self._account.address, "pending")))
        n = self._nonce
        self._nonce += 1
        return n

    def resync_nonce(self) -> None:
        """Forget the local nonce (after a failed send) so the next one comes from the node."""
        self._nonce = None

    def _params(self, gas: int) -> TxParams:
        price = self._gas_price()  # first: a failed call must not use up a nonce (that would leave a gap)
        return cast(
            TxParams,
            {
                "from": self._account.address,
                "nonce": self._next_nonce(),
                "gas": gas,
                "gasPrice": price,
                "chainId": self._chain_id,
            },
        )

    def _sign(self, tx: Any) -> SignedTx:
        signed = self._account.sign_transaction(tx)
        return SignedTx(raw=bytes(signed.raw_transaction), tx_hash=bytes(signed.hash), nonce=int(tx["nonce"]))

    def deploy(self) -> str:
        """Deploy the committed Anchor bytecode; the address comes from the receipt (FISCO < 3.12 derives
        addresses differently, so never compute it locally)."""
        factory = self.w3.eth.contract(abi=self._abi, bytecode=anchor_artifact()["bytecode"])
        tx = factory.constructor().build_transaction(self._params(DEPLOY_GAS))
        stx = self._sign(tx)
        self.send(stx)
        rec = _guard(lambda: self.w3.eth.wait_for_transaction_receipt(HexBytes(stx.tx_hash), timeout=60))
        if rec["status"] != 1 or not rec.get("contractAddress"):
            raise TransactionFailed("Anchor contract deployment failed")
        address = str(rec["contractAddress"])
        log.info("deployed Anchor at %s (block %d)", address, rec["blockNumber"])
        return address

    def prepare_anchor(self, kind: AnchorKind, gw: str, root: bytes, number: int, count: int) -> SignedTx:
        if self.anchored_at(self.account, kind, gw, root) is not None:
            raise AlreadyAnchored(f"root {root.hex()} is already anchored by this account")
        fn = self._contract.functions.anchor(int(kind), gw, root, number, count)
        tx = fn.build_transaction(self._params(self.gas_limit))
        return self._sign(tx)

    def send(self, tx: SignedTx) -> None:
        self.send_raw(tx.raw)

    def send_raw(self, raw: bytes) -> None:
        """Submit a signed transaction; re-sending one the node already has is not an error."""
        try:
            _guard(lambda: self.w3.eth.send_raw_transaction(raw))
        except ChainUnavailable:
            raise
        except Exception as exc:  # nodes and eth-tester report rejections with assorted types
            text = str(exc).lower()
            if "already known" in text or "already imported" in text or "known transaction" in text:
                return
            if any(
                p in text for p in ("nonce too low", "nonce is too low", "invalid transaction nonce", "correct nonce")
            ):
                # Fine if this very transaction is already mined; otherwise its nonce went to another one
                # and the queue must prepare a fresh transaction.
                if self.receipt(bytes(Web3.keccak(raw))) is not None:
                    return
                self.resync_nonce()
                raise StaleTransaction(f"nonce already used by another transaction: {exc}") from exc
            self.resync_nonce()
            raise TransactionFailed(f"node rejected the transaction: {exc}") from exc

    def receipt(self, tx_hash: bytes) -> TxReceipt | None:
        try:
            rec = _guard(lambda: self.w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        except TransactionNotFound:
            return None
        if rec is None or rec.get("blockNumber") is None:
            return None
        return TxReceipt(
            tx_hash=bytes(tx_hash),
            ok=rec["status"] == 1,
            block_number=int(rec["blockNumber"]),
            block_hash=bytes(rec["blockHash"]),
            logs=tuple(rec["logs"]),
        )

    def anchored_in(self, receipt: TxReceipt, root: bytes) -> AnchorInfo | None:
        events = self._contract.events.Anchored().process_receipt({"logs": list(receipt.logs)}, errors=DISCARD)
        for ev in events:
            if bytes(ev["args"]["root"]) == root and ev["address"] == self._contract.address:
                a = ev["args"]
                try:
                    kind = AnchorKind(int(a["kind"]))
                except ValueError:
                    continue  # the contract refuses unknown kinds; such an event is not ours to read
                return AnchorInfo(
                    int(a["blockNumber"]),
                    _address(a["anchorer"]),
                    kind,
                    str(a["gw"]),
                    int(a["number"]),
                    int(a["count"]),
                )
        return None

    def anchored_at(self, anchorer: bytes, kind: AnchorKind, gw: str, root: bytes) -> AnchorInfo | None:
        fn = self._contract.functions.anchoredAt(_checksum(anchorer), int(kind), gw, root)
        block, number, count = self._call(fn, "anchoredAt")
        if int(block) == 0:
            return None
        return AnchorInfo(int(block), anchorer, kind, gw, int(number), int(count))

    def latest_anchored(self, anchorer: bytes, kind: AnchorKind, gw: str) -> tuple[int, int] | None:
        number, block = self._call(
            self._contract.functions.latestAnchored(_checksum(anchorer), int(kind), gw), "latestAnchored"
        )
        return None if int(number) == 0 else (int(number), int(block))

    def own_anchor(self, kind: AnchorKind, gw: str, root: bytes) -> tuple[AnchorInfo, TxReceipt] | None:
        info = self.anchored_at(self.account, kind, gw, root)
        if info is None:
            return None
        logs = _guard(
            lambda: self.w3.eth.get_logs(
                {
                    "address": self._contract.address,
                    "fromBlock": info.block_number,
                    "toBlock": info.block_number,
                    "topics": [ANCHORED_TOPIC, HexBytes(root), HexBytes(bytes(12) + self.account)],
                }
            )
        )
        for entry in logs:
            rec = self.receipt(bytes(entry["transactionHash"]))
            if rec is not None and rec.ok and self.anchored_in(rec, root) == info:
                return info, rec
        return None

    def _call(self, fn: Any, what: str) -> Any:
        try:
            return _guard(fn.call)
        except ContractLogicError as exc:
            raise TransactionFailed(f"{what} call reverted: {exc}") from exc

    # ------------------------------------------------------------------ gateway registry (operator actions)
    def _transact(self, fn: Any, what: str) -> TxReceipt:
        """Sign, send and wait for an administrative transaction; a revert raises with the node's reason."""
        try:
            _guard(lambda: fn.call({"from": self._account.address}))  # surfaces the revert reason first
        except (ContractLogicError, Web3RPCError) as exc:
            # ganache reports call reverts as RPC errors; other nodes as ContractLogicError.
            reason = getattr(exc, "message", None) or str(exc)
            raise TransactionFailed(f"{what} refused by the contract: {reason}") from exc
        stx = self._sign(fn.build_transaction(self._params(self.gas_limit)))
        self.send(stx)
        rec = _guard(lambda: self.w3.eth.wait_for_transaction_receipt(HexBytes(stx.tx_hash), timeout=120))
        if rec["status"] != 1:
            raise TransactionFailed(f"{what} failed on chain (tx 0x{stx.tx_hash.hex()})")
        return TxReceipt(stx.tx_hash, True, int(rec["blockNumber"]), bytes(rec["blockHash"]))

    def approve_operator(self, operator: bytes) -> TxReceipt:
        return self._transact(self._contract.functions.approveOperator(_checksum(operator)), "approving an operator")

    def revoke_operator(self, operator: bytes) -> TxReceipt:
        return self._transact(self._contract.functions.revokeOperator(_checksum(operator)), "revoking an operator")

    def transfer_admin(self, new_admin: bytes) -> TxReceipt:
        return self._transact(
            self._contract.functions.transferAdmin(_checksum(new_admin)), "transferring the administrator role"
        )

    def register_gateway(self, gw: str, sm2_public_key: bytes, anchorer: bytes) -> TxReceipt:
        fn = self._contract.functions.registerGateway(gw, sm2_public_key, _checksum(anchorer))
        return self._transact(fn, f"registering {gw}")

    def rotate_gateway_key(self, gw: str, sm2_public_key: bytes, anchorer: bytes) -> TxReceipt:
        fn = self._contract.functions.rotateGatewayKey(gw, sm2_public_key, _checksum(anchorer))
        return self._transact(fn, f"rotating {gw}'s key")

    def revoke_gateway(self, gw: str) -> TxReceipt:
        return self._transact(self._contract.functions.revokeGateway(gw), f"revoking {gw}")

    def admin(self) -> bytes:
        return _address(self._call(self._contract.functions.admin(), "admin"))

    def is_operator(self, account: bytes) -> bool:
        return bool(self._call(self._contract.functions.isOperator(_checksum(account)), "isOperator"))

    def gateway(self, gw: str) -> GatewayEntry | None:
        operator, revoked, revoked_block, n = self._call(self._contract.functions.gatewayInfo(gw), "gatewayInfo")
        if int(operator, 16) == 0:
            return None
        if not 1 <= int(n) <= MAX_KEY_HISTORY:
            raise TransactionFailed(f"registry entry of {gw} has {n} keys; at most {MAX_KEY_HISTORY} are read")
        keys = []
        for i in range(int(n)):
            key, anchorer, since = self._call(self._contract.functions.gatewayKey(gw, i), "gatewayKey")
            if len(key) != SM2_POINT_SIZE:
                raise TransactionFailed(f"registry key {i} of {gw} is not {SM2_POINT_SIZE} bytes")
            keys.append(KeyRecord(bytes(key), _address(anchorer), int(since)))
        return GatewayEntry(gw, _address(operator), bool(revoked), int(revoked_block), tuple(keys))

    # ------------------------------------------------------------------ reads
    def block_number(self) -> int:
        return _guard(lambda: int(self.w3.eth.block_number))
