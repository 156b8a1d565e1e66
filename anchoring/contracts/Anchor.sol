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

    event Anchored(bytes32 indexed root, string gw, uint64 batch, uint32 count, uint256 blockNumber);

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
}
