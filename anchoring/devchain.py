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
DEFAULT_CHAIN_ID = 131277322940537  # eth-tester's own


class DevChain:
    """Auto-mining chain; ``fund`` gives an account ether so gas-charging behaviour is exercised too.

    ``chain_id``: two in-process chains (the demo's anchor chain and its supervision chain) must not share one,
    or a transaction or receipt made for one would pass for the other's."""

    def __init__(self, chain_id: int = DEFAULT_CHAIN_ID) -> None:
        from eth.vm.chain_context import ChainContext
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester.defaults import API_ENDPOINTS, static_return

        backend = PyEVMBackend()
        if chain_id != DEFAULT_CHAIN_ID:
            # eth-tester fixes the id in its chain class and web3's tester provider answers eth_chainId with a
            # constant: both are told the new one (the VM checks each transaction's signature against it).
            backend.chain.chain_id = chain_id
            backend.chain.chain_context = ChainContext(chain_id)
        endpoints = {k: dict(v) for k, v in API_ENDPOINTS.items()}
        endpoints["eth"]["chainId"] = static_return(chain_id)
        self.tester = EthereumTester(backend)
        self.web3 = Web3(EthereumTesterProvider(self.tester, api_endpoints=endpoints))
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
