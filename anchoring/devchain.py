"""An in-process EVM (eth-tester + py-evm) with the Anchor contract: the demo's embedded chain.

It lives inside one process. Tests that need a chain shared by several processes (a gateway killed
with -9, a separate verifier) use ganache instead (tests/chain.py), which speaks real JSON-RPC.
"""

from __future__ import annotations

import secrets
import threading

from web3 import EthereumTesterProvider, Web3
from web3.types import Wei

from anchoring.evm import EvmChainClient

FUND_WEI = 10**21


class DevChain:
    """Auto-mining chain; ``fund`` gives an account ether so gas-charging behaviour is exercised too."""

    def __init__(self) -> None:
        from eth_tester import EthereumTester, PyEVMBackend

        self.tester = EthereumTester(PyEVMBackend())
        self.web3 = Web3(EthereumTesterProvider(self.tester))
        self._faucet = self.web3.eth.accounts[0]
        self._lock = threading.Lock()
        self.admin_key = secrets.token_bytes(32)  # the deployer: the contract's alliance administrator
        deployer = Web3().eth.account.from_key(self.admin_key).address
        self.fund(deployer)
        self.contract_address = EvmChainClient(self.web3, self.admin_key, contract=None)._contract.address

    def admin(self) -> EvmChainClient:
        """A client acting as the contract's administrator (who may approve operators)."""
        return EvmChainClient(self.web3, self.admin_key, contract=self.contract_address)

    def fund(self, address: str, wei: int = FUND_WEI) -> None:
        with self._lock:
            tx = self.web3.eth.send_transaction({"from": self._faucet, "to": address, "value": Wei(wei)})
            self.web3.eth.wait_for_transaction_receipt(tx)

    def close(self) -> None:
        """Nothing to release; kept so callers can treat every chain alike."""
