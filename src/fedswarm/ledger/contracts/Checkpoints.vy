# pragma version ~=0.4.3
"""
@title fedswarm ledger anchor
@notice Records, per federation, the signed tree heads (size, Merkle root) of its ledger and the
        registry of its members' Ed25519 keys. A federation is named by the leaf hash of the first
        entry of its ledger; its operator is whoever registered it, and only the operator anchors.
        Anchored sizes never decrease, so the chain holds a monotone sequence of checkpoints that
        every later copy of the log must extend.
"""

MAX_BATCH: constant(uint256) = 128


struct Anchor:
    size: uint256
    root: bytes32
    time: uint256


event FederationRegistered:
    federation: indexed(bytes32)
    operator: indexed(address)


event MemberRegistered:
    federation: indexed(bytes32)
    member: bytes32
    key: bytes32


event Anchored:
    federation: indexed(bytes32)
    index: uint256
    size: uint256
    root: bytes32


operator: public(HashMap[bytes32, address])
anchor_count: public(HashMap[bytes32, uint256])
member_key: public(HashMap[bytes32, HashMap[bytes32, bytes32]])
member_count: public(HashMap[bytes32, uint256])
anchors: HashMap[bytes32, HashMap[uint256, Anchor]]


@external
def register_federation(federation: bytes32):
    """
    @notice Register a federation; the sender becomes its operator.
    """
    assert self.operator[federation] == empty(address), "federation already registered"
    self.operator[federation] = msg.sender
    log FederationRegistered(federation=federation, operator=msg.sender)


@external
def register_members(federation: bytes32, members: DynArray[bytes32, MAX_BATCH], keys: DynArray[bytes32, MAX_BATCH]):
    """
    @notice Register members (SHA-256 of their names) with their Ed25519 public keys. A member's key,
            once registered, cannot change.
    """
    assert self.operator[federation] == msg.sender, "only the federation's operator"
    assert len(members) == len(keys), "members and keys differ in length"
    for i: uint256 in range(len(members), bound=MAX_BATCH):
        member: bytes32 = members[i]
        known: bytes32 = self.member_key[federation][member]
        if known == empty(bytes32):
            self.member_key[federation][member] = keys[i]
            self.member_count[federation] += 1
            log MemberRegistered(federation=federation, member=member, key=keys[i])
        else:
            assert known == keys[i], "member already registered with another key"


@external
def anchor(federation: bytes32, size: uint256, root: bytes32):
    """
    @notice Record a checkpoint (size, root) of the federation's ledger.
    """
    assert self.operator[federation] == msg.sender, "only the federation's operator"
    count: uint256 = self.anchor_count[federation]
    if count > 0:
        assert size >= self.anchors[federation][count - 1].size, "anchored size must not decrease"
    self.anchors[federation][count] = Anchor(size=size, root=root, time=block.timestamp)
    self.anchor_count[federation] = count + 1
    log Anchored(federation=federation, index=count, size=size, root=root)


@view
@external
def anchor_at(federation: bytes32, index: uint256) -> (uint256, bytes32, uint256):
    """
    @notice The checkpoint anchored at position `index`: (size, root, block time).
    """
    assert index < self.anchor_count[federation], "no anchor at this index"
    found: Anchor = self.anchors[federation][index]
    return found.size, found.root, found.time
