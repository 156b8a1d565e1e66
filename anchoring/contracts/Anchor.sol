// SPDX-License-Identifier: Apache-2.0
// Anchors SM3 Merkle roots of gateway batches and roll-ups, and keeps the alliance's gateway registry.
//
// Anchors are keyed by (anchoring account, kind, gateway id, root): nobody can block another account's anchor by
// anchoring the same root first, and a batch anchor can never be read as a roll-up (or the reverse). Which account
// may anchor for a gateway is the registry's business: a verifier accepts an anchor only from the account the
// gateway's operator registered for the block it landed in.
//
// Authority: the alliance administrator (the deployer, transferable) approves operator accounts; only an approved
// operator may register a gateway id, and only that operator may rotate its key. The operator or the administrator
// may revoke it. Every grant and change is an event, and the whole key history stays readable through view calls
// (FISCO BCOS 2.x offers no log queries over RPC).
pragma solidity >=0.6.10 <0.9.0;

contract Anchor {
    uint8 public constant KIND_BATCH = 0;
    uint8 public constant KIND_ROLLUP = 1;

    struct Entry {
        uint64 blockNumber;
        uint64 number;
        uint32 count;
    }

    struct Latest {
        uint64 number;
        uint64 blockNumber;
    }

    mapping(bytes32 => Entry) private entries; // keccak(anchorer, kind, gw, root)
    mapping(bytes32 => Latest) private latest; // keccak(anchorer, kind, gw): highest number anchored

    address public admin;
    mapping(address => bool) public isOperator;

    // One registered key: the gateway's SM2 public key (64 bytes, X || Y), the chain account that anchors for it,
    // and the block from which it holds. The first key of a gateway also covers anchors made before it.
    struct KeyRecord {
        bytes sm2PublicKey;
        address anchorer;
        uint64 sinceBlock;
    }

    struct Gateway {
        address operator;
        bool revoked;
        uint64 revokedBlock;
        KeyRecord[] keys;
    }

    mapping(string => Gateway) private gateways;

    event Anchored(bytes32 indexed root, address indexed anchorer, uint8 kind, string gw, uint64 number, uint32 count,
                   uint256 blockNumber);
    event AdminTransferred(address previousAdmin, address newAdmin);
    event OperatorApproved(address operator);
    event OperatorRevoked(address operator);
    event GatewayRegistered(string gw, address operator, bytes sm2PublicKey, address anchorer);
    event GatewayKeyRotated(string gw, bytes sm2PublicKey, address anchorer);
    event GatewayRevoked(string gw, address by);

    constructor() public {
        admin = msg.sender;
        emit AdminTransferred(address(0), msg.sender);
    }

    modifier onlyAdmin() {
        require(msg.sender == admin, "only the alliance administrator");
        _;
    }

    function transferAdmin(address next) external onlyAdmin {
        require(next != address(0), "zero administrator");
        emit AdminTransferred(admin, next);
        admin = next;
    }

    function approveOperator(address operator) external onlyAdmin {
        require(operator != address(0), "zero operator");
        require(!isOperator[operator], "already an operator");
        isOperator[operator] = true;
        emit OperatorApproved(operator);
    }

    function revokeOperator(address operator) external onlyAdmin {
        require(isOperator[operator], "not an operator");
        isOperator[operator] = false;
        emit OperatorRevoked(operator);
    }

    // ------------------------------------------------------------------ anchors
    function anchor(uint8 kind, string calldata gw, bytes32 root, uint64 number, uint32 count) external {
        require(kind <= KIND_ROLLUP, "unknown anchor kind");
        require(root != bytes32(0), "zero root");
        require(bytes(gw).length > 0 && bytes(gw).length <= 64, "bad gateway id");
        require(number > 0 && count > 0, "number and count start at 1");
        bytes32 k = keccak256(abi.encode(msg.sender, kind, gw, root));
        require(entries[k].blockNumber == 0, "already anchored");
        entries[k] = Entry(uint64(block.number), number, count);
        bytes32 l = keccak256(abi.encode(msg.sender, kind, gw));
        if (number > latest[l].number) {
            latest[l] = Latest(number, uint64(block.number));
        }
        emit Anchored(root, msg.sender, kind, gw, number, count, block.number);
    }

    /// The anchor ``anchorer`` made of ``root`` for ``gw``: its block (0 when there is none), number and count.
    function anchoredAt(address anchorer, uint8 kind, string calldata gw, bytes32 root) external view
        returns (uint256 blockNumber, uint64 number, uint32 count)
    {
        Entry storage e = entries[keccak256(abi.encode(anchorer, kind, gw, root))];
        return (e.blockNumber, e.number, e.count);
    }

    /// The highest number ``anchorer`` anchored for ``gw`` (0 when none) and the block it landed in.
    function latestAnchored(address anchorer, uint8 kind, string calldata gw) external view
        returns (uint64 number, uint256 blockNumber)
    {
        Latest storage l = latest[keccak256(abi.encode(anchorer, kind, gw))];
        return (l.number, l.blockNumber);
    }

    // ------------------------------------------------------------------ gateway registry
    function registerGateway(string calldata gw, bytes calldata sm2PublicKey, address anchorer) external {
        require(isOperator[msg.sender], "not an approved operator");
        require(bytes(gw).length > 0 && bytes(gw).length <= 64, "bad gateway id");
        require(sm2PublicKey.length == 64, "SM2 public key must be 64 bytes (X || Y)");
        require(anchorer != address(0), "zero anchoring account");
        Gateway storage g = gateways[gw];
        require(g.operator == address(0), "gateway already registered");
        g.operator = msg.sender;
        g.keys.push(KeyRecord(sm2PublicKey, anchorer, uint64(block.number)));
        emit GatewayRegistered(gw, msg.sender, sm2PublicKey, anchorer);
    }

    function rotateGatewayKey(string calldata gw, bytes calldata sm2PublicKey, address anchorer) external {
        Gateway storage g = gateways[gw];
        require(g.operator == msg.sender, "only the gateway's operator");
        require(isOperator[msg.sender], "not an approved operator");
        require(!g.revoked, "gateway revoked");
        require(sm2PublicKey.length == 64, "SM2 public key must be 64 bytes (X || Y)");
        require(anchorer != address(0), "zero anchoring account");
        g.keys.push(KeyRecord(sm2PublicKey, anchorer, uint64(block.number)));
        emit GatewayKeyRotated(gw, sm2PublicKey, anchorer);
    }

    function revokeGateway(string calldata gw) external {
        Gateway storage g = gateways[gw];
        require(g.operator != address(0), "gateway not registered");
        require(msg.sender == g.operator || msg.sender == admin, "only the gateway's operator or the administrator");
        require(!g.revoked, "gateway revoked");
        g.revoked = true;
        g.revokedBlock = uint64(block.number);
        emit GatewayRevoked(gw, msg.sender);
    }

    function gatewayInfo(string calldata gw) external view
        returns (address operator, bool revoked, uint64 revokedBlock, uint256 keyCount)
    {
        Gateway storage g = gateways[gw];
        return (g.operator, g.revoked, g.revokedBlock, g.keys.length);
    }

    function gatewayKey(string calldata gw, uint256 index) external view
        returns (bytes memory sm2PublicKey, address anchorer, uint64 sinceBlock)
    {
        KeyRecord storage k = gateways[gw].keys[index];
        return (k.sm2PublicKey, k.anchorer, k.sinceBlock);
    }
}
