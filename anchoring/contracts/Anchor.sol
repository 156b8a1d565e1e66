// SPDX-License-Identifier: Apache-2.0
// Anchors SM3 Merkle roots of gateway batches. Idempotent by root: a root is recorded once, with the
// block it landed in, so a resubmitted transaction can never create a second, conflicting anchor.
pragma solidity >=0.6.10 <0.9.0;

contract Anchor {
    struct Entry {
        uint64 blockNumber;
        uint64 batch;
        uint32 count;
        string gw;
    }

    mapping(bytes32 => Entry) private entries;

    // Gateway registry: a gym operator vouches for a gateway id's SM2 public key (64 bytes, X || Y).
    // Anchoring itself stays open; what a platform trusts is the manifest signature under this key.
    struct Gateway {
        address operator;
        bytes sm2PublicKey;
        bool revoked;
        uint64 updatedBlock;
    }

    mapping(string => Gateway) private gateways;

    event Anchored(bytes32 indexed root, string gw, uint64 batch, uint32 count, uint256 blockNumber);
    event GatewayRegistered(string gw, address operator, bytes sm2PublicKey);
    event GatewayKeyRotated(string gw, bytes sm2PublicKey);
    event GatewayRevoked(string gw);

    function anchor(bytes32 root, string calldata gw, uint64 batch, uint32 count) external {
        require(root != bytes32(0), "zero root");
        require(entries[root].blockNumber == 0, "already anchored");
        entries[root] = Entry(uint64(block.number), batch, count, gw);
        emit Anchored(root, gw, batch, count, block.number);
    }

    /// Block number the root was anchored in; 0 when it never was.
    function anchoredAt(bytes32 root) external view returns (uint256) {
        return entries[root].blockNumber;
    }

    function anchorInfo(bytes32 root) external view returns (uint256 blockNumber, string memory gw, uint64 batch,
                                                             uint32 count) {
        Entry storage e = entries[root];
        return (e.blockNumber, e.gw, e.batch, e.count);
    }

    function registerGateway(string calldata gw, bytes calldata sm2PublicKey) external {
        require(bytes(gw).length > 0 && bytes(gw).length <= 64, "bad gateway id");
        require(sm2PublicKey.length == 64, "SM2 public key must be 64 bytes (X || Y)");
        require(gateways[gw].operator == address(0), "gateway already registered");
        gateways[gw] = Gateway(msg.sender, sm2PublicKey, false, uint64(block.number));
        emit GatewayRegistered(gw, msg.sender, sm2PublicKey);
    }

    function rotateGatewayKey(string calldata gw, bytes calldata sm2PublicKey) external {
        Gateway storage g = gateways[gw];
        require(g.operator == msg.sender, "only the gateway's operator");
        require(!g.revoked, "gateway revoked");
        require(sm2PublicKey.length == 64, "SM2 public key must be 64 bytes (X || Y)");
        g.sm2PublicKey = sm2PublicKey;
        g.updatedBlock = uint64(block.number);
        emit GatewayKeyRotated(gw, sm2PublicKey);
    }

    function revokeGateway(string calldata gw) external {
        Gateway storage g = gateways[gw];
        require(g.operator == msg.sender, "only the gateway's operator");
        require(!g.revoked, "gateway revoked");
        g.revoked = true;
        g.updatedBlock = uint64(block.number);
        emit GatewayRevoked(gw);
    }

    function gatewayInfo(string calldata gw) external view returns (address operator, bytes memory sm2PublicKey,
                                                                     bool revoked, uint64 updatedBlock) {
        Gateway storage g = gateways[gw];
        return (g.operator, g.sm2PublicKey, g.revoked, g.updatedBlock);
    }
}
