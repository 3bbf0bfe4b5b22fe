# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title WWW.Serve ledger: node registry, credits, stake, fee vouchers and duels
@notice One owner-less contract with all parameters fixed at deployment (deposit-contract style).
        It holds every wei of the network in one balance, so the conservation invariant is exact:
            self.balance == sum(credit) + sum(pending withdrawals) + sum(active + unbonding stake)
                            + sum(escrow of open duels)
        Sections: registry, credits, stake, fee vouchers (a unidirectional payment channel per
        origin->executor pair, EIP-712), duels (stake-weighted sortition, commit-reveal, settlement).
        Reverts carry "<Domain>: <problem>" reasons that the Python client maps to typed errors.
"""

import sortition

initializes: sortition

exports: (sortition.totalWeight, sortition.leafWeight, sortition.leafOwner, sortition.leafCount, sortition.DEPTH)

# ---------------------------------------------------------------------------------------------
# limits (bounded gas everywhere)
MAX_MODELS: constant(uint256) = 16
MAX_K: constant(uint256) = 8  # judges per duel fit one packed storage word
BPS: constant(uint256) = 10_000
SECP256K1N_HALF: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

# votes
VOTE_NONE: constant(uint8) = 0
VOTE_A: constant(uint8) = 1
VOTE_B: constant(uint8) = 2
VOTE_ABSTAIN: constant(uint8) = 3
VOTE_NO_EVIDENCE: constant(uint8) = 4

# duel status
DUEL_NONE: constant(uint8) = 0
DUEL_AWAITING_JUDGES: constant(uint8) = 1
DUEL_VOTING: constant(uint8) = 2
DUEL_SETTLED: constant(uint8) = 3
DUEL_CANCELLED: constant(uint8) = 4

# settlement outcomes
OUTCOME_A_WON: constant(uint8) = 1
OUTCOME_B_WON: constant(uint8) = 2
OUTCOME_TIE: constant(uint8) = 3
OUTCOME_VOIDED: constant(uint8) = 4  # a majority of judges got no evidence from the origin

# slash reasons
SLASH_LOST_DUEL: constant(uint8) = 1
SLASH_MINORITY_JUDGE: constant(uint8) = 2
SLASH_ABSTAINED_JUDGE: constant(uint8) = 3

# cancel reasons
CANCEL_TOO_FEW_JUDGES: constant(uint8) = 1
CANCEL_NOT_DRAWN: constant(uint8) = 2

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH: constant(bytes32) = keccak256(
    "Voucher(address origin,address executor,uint256 cumulativeAmount)"
)

# ---------------------------------------------------------------------------------------------
# deployment parameters (immutable)
MIN_STAKE: public(immutable(uint256))
UNBONDING_PERIOD: public(immutable(uint256))  # seconds
WITHDRAWAL_NOTICE: public(immutable(uint256))  # seconds
K_JUDGES: public(immutable(uint256))
SEED_DELAY: public(immutable(uint256))  # blocks between opening and the seed block
DRAW_WINDOW: public(immutable(uint256))  # blocks after the seed block in which judges can be drawn
COMMIT_WINDOW: public(immutable(uint256))  # blocks
REVEAL_WINDOW: public(immutable(uint256))  # blocks
SETTLE_WINDOW: public(immutable(uint256))  # blocks after the reveal window during which stake stays locked
GAMMA_BPS: public(immutable(uint256))  # share of the loser's stake moved to the winner
MINORITY_SLASH_BPS: public(immutable(uint256))
ABSTAIN_SLASH_BPS: public(immutable(uint256))
DUELIST_FEE: public(immutable(uint256))  # wei, paid by the origin to each duelist
JUDGE_FEE: public(immutable(uint256))  # wei, paid by the origin to each judge that reveals
DUEL_ESCROW: public(immutable(uint256))
DOMAIN_SEPARATOR: public(immutable(bytes32))

# ---------------------------------------------------------------------------------------------
# registry
struct Node:
    pubkey: bytes32  # ed25519 public key that signs this node's results
    endpoint: String[256]
    models: DynArray[String[64], MAX_MODELS]
    metadata: String[1024]
    active: bool
    leaf: uint256  # sortition leaf (valid once `registered_once`)


nodes: public(HashMap[address, Node])
registeredOnce: public(HashMap[address, bool])
pubkeyOwner: public(HashMap[bytes32, address])
activeNodeCount: public(uint256)

# ---------------------------------------------------------------------------------------------
# credits and stake (wei)
credit: public(HashMap[address, uint256])
pendingWithdrawal: public(HashMap[address, uint256])
withdrawableAt: public(HashMap[address, uint256])
activeStake: public(HashMap[address, uint256])
unbondingStake: public(HashMap[address, uint256])
unbondingEnd: public(HashMap[address, uint256])

# fee vouchers: cumulative amount already paid, per (origin, executor)
claimed: public(HashMap[address, HashMap[address, uint256]])

# ---------------------------------------------------------------------------------------------
# duels, packed to keep a full duel lifecycle cheap (Vyper does not pack storage by itself):
# duelInfo:   status(4) | outcome(4) | origin leaf(24) | a leaf(24) | b leaf(24)
#             | seedBlock(40) | commitEnd(40) | revealEnd(40)
# duelPanel:  judge leaves (8 x 24 bits) | votes (8 x 3 bits, from bit 192) | panel size (4, bit 216)
# Nodes are referred to by their sortition leaf, which never changes owner.
duelInfo: HashMap[uint256, uint256]
duelPanel: HashMap[uint256, uint256]
duelCount: public(uint256)
commitments: public(HashMap[uint256, HashMap[address, bytes32]])  # cleared on reveal
lockedUntil: public(HashMap[address, uint256])  # block until which stake cannot be withdrawn

# ---------------------------------------------------------------------------------------------
# events (past tense, emitted right after the state change)
event NodeRegistered:
    node: indexed(address)
    pubkey: bytes32
    endpoint: String[256]
    models: DynArray[String[64], MAX_MODELS]
    metadata: String[1024]
    leaf: uint256

event NodeUpdated:
    node: indexed(address)
    pubkey: bytes32
    endpoint: String[256]
    models: DynArray[String[64], MAX_MODELS]
    metadata: String[1024]

event NodeLeft:
    node: indexed(address)

event CreditDeposited:
    account: indexed(address)
    amount: uint256

event WithdrawalRequested:
    account: indexed(address)
    amount: uint256
    availableAt: uint256

event WithdrawalCancelled:
    account: indexed(address)
    amount: uint256

event CreditWithdrawn:
    account: indexed(address)
    amount: uint256

event Staked:
    node: indexed(address)
    amount: uint256

event UnstakeRequested:
    node: indexed(address)
    amount: uint256
    unbondingEnd: uint256

event StakeWithdrawn:
    node: indexed(address)
    amount: uint256

event VoucherClaimed:
    origin: indexed(address)
    executor: indexed(address)
    cumulativeAmount: uint256
    paid: uint256

event DuelOpened:
    duelId: indexed(uint256)
    origin: indexed(address)
    a: address
    b: address
    questionHash: bytes32
    answerAHash: bytes32
    answerBHash: bytes32
    seedBlock: uint256
    escrow: uint256

event JudgesDrawn:
    duelId: indexed(uint256)
    judges: DynArray[address, MAX_K]
    commitEnd: uint256
    revealEnd: uint256

event VoteCommitted:
    duelId: indexed(uint256)
    judge: indexed(address)
    commitment: bytes32

event VoteRevealed:
    duelId: indexed(uint256)
    judge: indexed(address)
    vote: uint8

event StakeSlashed:
    duelId: indexed(uint256)
    node: indexed(address)
    amount: uint256
    reason: uint8

event DuelRewardPaid:
    duelId: indexed(uint256)
    account: indexed(address)
    amount: uint256
    reason: uint8  # 1 stake won, 2 judge pool share, 3 duelist fee, 4 judge fee, 5 escrow refund

event DuelSettled:
    duelId: indexed(uint256)
    outcome: uint8
    votesA: uint256
    votesB: uint256
    stakeMoved: uint256
    judgePool: uint256

event DuelCancelled:
    duelId: indexed(uint256)
    reason: uint8

REWARD_STAKE_WON: constant(uint8) = 1
REWARD_JUDGE_POOL: constant(uint8) = 2
REWARD_DUELIST_FEE: constant(uint8) = 3
REWARD_JUDGE_FEE: constant(uint8) = 4
REWARD_ESCROW_REFUND: constant(uint8) = 5


# ---------------------------------------------------------------------------------------------
@deploy
def __init__(
    min_stake: uint256,
    unbonding_period: uint256,
    withdrawal_notice: uint256,
    k_judges: uint256,
    seed_delay: uint256,
    draw_window: uint256,
    commit_window: uint256,
    reveal_window: uint256,
    settle_window: uint256,
    gamma_bps: uint256,
    minority_slash_bps: uint256,
    abstain_slash_bps: uint256,
    duelist_fee: uint256,
    judge_fee: uint256,
    tree_depth: uint256,
):
    assert min_stake > 0, "Params: min_stake must be > 0"
    assert k_judges >= 1 and k_judges <= MAX_K, "Params: k_judges out of range"
    assert seed_delay >= 1, "Params: seed_delay must be >= 1"
    # blockhash() only reaches 256 blocks back
    assert draw_window >= 1 and draw_window <= 250, "Params: draw_window out of range"
    assert commit_window >= 1 and reveal_window >= 1 and settle_window >= 1, "Params: windows must be >= 1"
    assert gamma_bps <= BPS and minority_slash_bps <= BPS and abstain_slash_bps <= BPS, "Params: bps > 10000"
    sortition.__init__(tree_depth)
    MIN_STAKE = min_stake
    UNBONDING_PERIOD = unbonding_period
    WITHDRAWAL_NOTICE = withdrawal_notice
    K_JUDGES = k_judges
    SEED_DELAY = seed_delay
    DRAW_WINDOW = draw_window
    COMMIT_WINDOW = commit_window
    REVEAL_WINDOW = reveal_window
    SETTLE_WINDOW = settle_window
    GAMMA_BPS = gamma_bps
    MINORITY_SLASH_BPS = minority_slash_bps
    ABSTAIN_SLASH_BPS = abstain_slash_bps
    DUELIST_FEE = duelist_fee
    JUDGE_FEE = judge_fee
    DUEL_ESCROW = 2 * duelist_fee + k_judges * judge_fee
    DOMAIN_SEPARATOR = keccak256(
        abi_encode(EIP712_DOMAIN_TYPEHASH, keccak256("WWWServe"), keccak256("1"), chain.id, self)
    )


# ---------------------------------------------------------------------------------------------
# internal helpers
@internal
def _set_weight(node: address, leaf: uint256):
    """@dev The routable weight is the active stake of a registered node holding >= MIN_STAKE."""
    w: uint256 = 0
    if self.nodes[node].active and self.activeStake[node] >= MIN_STAKE:
        w = self.activeStake[node]
    sortition._set(leaf, w)


@internal
def _sync_weight(node: address):
    if self.registeredOnce[node]:
        self._set_weight(node, self.nodes[node].leaf)


@internal
def _slash(node: address, leaf: uint256, amount: uint256) -> uint256:
    """
    @dev Take up to `amount` from the node's active stake, then from its unbonding stake. Duel
         parties are named by their leaf, so the caller passes it (saves two storage reads).
    """
    act: uint256 = self.activeStake[node]
    unb: uint256 = self.unbondingStake[node]
    taken: uint256 = min(amount, act + unb)
    if taken == 0:
        return 0
    from_active: uint256 = min(taken, act)
    self.activeStake[node] = act - from_active
    if taken > from_active:
        self.unbondingStake[node] = unb - (taken - from_active)
    self._set_weight(node, leaf)
    return taken


@view
@internal
def _total_stake(node: address) -> uint256:
    return self.activeStake[node] + self.unbondingStake[node]


@internal
def _validate_node_fields(pubkey: bytes32, models: DynArray[String[64], MAX_MODELS]):
    assert pubkey != empty(bytes32), "Registry: empty public key"
    owner: address = self.pubkeyOwner[pubkey]
    assert owner == empty(address) or owner == msg.sender, "Registry: public key already registered"
    assert len(models) > 0, "Registry: no models"


# ---------------------------------------------------------------------------------------------
# registry
@external
def register(
    pubkey: bytes32,
    endpoint: String[256],
    models: DynArray[String[64], MAX_MODELS],
    metadata: String[1024],
):
    """@notice Register msg.sender (the operator wallet) as a node. The node id is the address."""
    assert not self.nodes[msg.sender].active, "Registry: already registered"
    self._validate_node_fields(pubkey, models)
    leaf: uint256 = 0
    if self.registeredOnce[msg.sender]:
        leaf = self.nodes[msg.sender].leaf
    else:
        leaf = sortition._allocate(msg.sender)
        self.registeredOnce[msg.sender] = True
    self.nodes[msg.sender] = Node(
        pubkey=pubkey, endpoint=endpoint, models=models, metadata=metadata, active=True, leaf=leaf
    )
    self.pubkeyOwner[pubkey] = msg.sender
    self.activeNodeCount += 1
    self._sync_weight(msg.sender)
    log NodeRegistered(
        node=msg.sender, pubkey=pubkey, endpoint=endpoint, models=models, metadata=metadata, leaf=leaf
    )


@external
def updateNode(
    pubkey: bytes32,
    endpoint: String[256],
    models: DynArray[String[64], MAX_MODELS],
    metadata: String[1024],
):
    """@notice Change the node's key, endpoint, models or metadata."""
    assert self.nodes[msg.sender].active, "Registry: not registered"
    self._validate_node_fields(pubkey, models)
    old: bytes32 = self.nodes[msg.sender].pubkey
    if old != pubkey:
        self.pubkeyOwner[old] = empty(address)
        self.pubkeyOwner[pubkey] = msg.sender
    self.nodes[msg.sender].pubkey = pubkey
    self.nodes[msg.sender].endpoint = endpoint
    self.nodes[msg.sender].models = models
    self.nodes[msg.sender].metadata = metadata
    log NodeUpdated(node=msg.sender, pubkey=pubkey, endpoint=endpoint, models=models, metadata=metadata)


@external
def leave():
    """@notice Stop being routable and a judge candidate. Stake stays until unstaked."""
    assert self.nodes[msg.sender].active, "Registry: not registered"
    self.nodes[msg.sender].active = False
    self.pubkeyOwner[self.nodes[msg.sender].pubkey] = empty(address)
    self.activeNodeCount -= 1
    self._sync_weight(msg.sender)
    log NodeLeft(node=msg.sender)


@view
@external
def getModels(node: address) -> DynArray[String[64], MAX_MODELS]:
    return self.nodes[node].models


# ---------------------------------------------------------------------------------------------
# credits
@payable
@external
def deposit():
    """@notice Deposit native ETH as credit of msg.sender."""
    assert msg.value > 0, "Bank: zero amount"
    self.credit[msg.sender] += msg.value
    log CreditDeposited(account=msg.sender, amount=msg.value)


@external
def requestWithdrawal(amount: uint256):
    """
    @notice Move free credit into a pending withdrawal, payable after WITHDRAWAL_NOTICE seconds.
            Pending funds still pay fee vouchers, so executors can claim what they earned.
            A new request adds to the pending amount and restarts the notice.
    """
    assert amount > 0, "Bank: zero amount"
    assert self.credit[msg.sender] >= amount, "Bank: insufficient credit"
    self.credit[msg.sender] -= amount
    self.pendingWithdrawal[msg.sender] += amount
    available_at: uint256 = block.timestamp + WITHDRAWAL_NOTICE
    self.withdrawableAt[msg.sender] = available_at
    log WithdrawalRequested(account=msg.sender, amount=amount, availableAt=available_at)


@external
def cancelWithdrawal():
    """@notice Return the whole pending withdrawal to free credit."""
    amount: uint256 = self.pendingWithdrawal[msg.sender]
    assert amount > 0, "Bank: no pending withdrawal"
    self.pendingWithdrawal[msg.sender] = 0
    self.credit[msg.sender] += amount
    log WithdrawalCancelled(account=msg.sender, amount=amount)


@nonreentrant
@external
def withdraw():
    """@notice Send the pending withdrawal to msg.sender once the notice has passed."""
    amount: uint256 = self.pendingWithdrawal[msg.sender]
    assert amount > 0, "Bank: no pending withdrawal"
    assert block.timestamp >= self.withdrawableAt[msg.sender], "Bank: withdrawal notice not over"
    self.pendingWithdrawal[msg.sender] = 0
    log CreditWithdrawn(account=msg.sender, amount=amount)
    send(msg.sender, amount)


# ---------------------------------------------------------------------------------------------
# stake
@external
def stake(amount: uint256):
    """@notice Move free credit into active stake. Only registered nodes stake."""
    assert amount > 0, "Bank: zero amount"
    assert self.nodes[msg.sender].active, "Registry: not registered"
    assert self.credit[msg.sender] >= amount, "Bank: insufficient credit"
    self.credit[msg.sender] -= amount
    self.activeStake[msg.sender] += amount
    self._sync_weight(msg.sender)
    log Staked(node=msg.sender, amount=amount)


@external
def requestUnstake(amount: uint256):
    """
    @notice Start unbonding `amount` of active stake for UNBONDING_PERIOD seconds. Unbonding stake
            is not routable but stays slashable. A new request restarts the period for the whole
            unbonding amount.
    """
    assert amount > 0, "Bank: zero amount"
    assert self.activeStake[msg.sender] >= amount, "Bank: insufficient stake"
    self.activeStake[msg.sender] -= amount
    self.unbondingStake[msg.sender] += amount
    end: uint256 = block.timestamp + UNBONDING_PERIOD
    self.unbondingEnd[msg.sender] = end
    self._sync_weight(msg.sender)
    log UnstakeRequested(node=msg.sender, amount=amount, unbondingEnd=end)


@external
def withdrawStake():
    """@notice Move fully unbonded stake back to free credit (no duel may be open against you)."""
    amount: uint256 = self.unbondingStake[msg.sender]
    assert amount > 0, "Bank: nothing unbonding"
    assert block.timestamp >= self.unbondingEnd[msg.sender], "Bank: still unbonding"
    assert block.number > self.lockedUntil[msg.sender], "Bank: stake locked by an open duel"
    self.unbondingStake[msg.sender] = 0
    self.credit[msg.sender] += amount
    log StakeWithdrawn(node=msg.sender, amount=amount)


# ---------------------------------------------------------------------------------------------
# fee vouchers
@view
@external
def voucherDigest(origin: address, executor: address, cumulative_amount: uint256) -> bytes32:
    """@notice The EIP-712 digest an origin signs to owe `executor` a cumulative amount."""
    return self._voucher_digest(origin, executor, cumulative_amount)


@view
@internal
def _voucher_digest(origin: address, executor: address, cumulative_amount: uint256) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(VOUCHER_TYPEHASH, origin, executor, cumulative_amount))
    return keccak256(concat(x"1901", DOMAIN_SEPARATOR, struct_hash))


@external
def claimVoucher(origin: address, executor: address, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Pay `executor` what `origin` owes it under the latest signed voucher. Anyone may submit
            it; the money always goes to the executor's credit. Pays from the origin's credit, then
            from its pending withdrawal; what cannot be paid now stays claimable later.
    """
    assert len(signature) == 65, "Voucher: bad signature length"
    already: uint256 = self.claimed[origin][executor]
    assert cumulative_amount > already, "Voucher: stale voucher"
    r: uint256 = convert(slice(signature, 0, 32), uint256)
    s: uint256 = convert(slice(signature, 32, 32), uint256)
    v: uint8 = convert(slice(signature, 64, 1), uint8)
    if v < 27:
        v += 27
    assert s <= SECP256K1N_HALF and (v == 27 or v == 28), "Voucher: malformed signature"
    signer: address = ecrecover(self._voucher_digest(origin, executor, cumulative_amount), v, r, s)
    assert signer != empty(address) and signer == origin, "Voucher: bad signature"

    owed: uint256 = cumulative_amount - already
    from_credit: uint256 = min(owed, self.credit[origin])
    from_pending: uint256 = min(owed - from_credit, self.pendingWithdrawal[origin])
    paid: uint256 = from_credit + from_pending
    assert paid > 0, "Voucher: origin has no funds"
    self.credit[origin] -= from_credit
    self.pendingWithdrawal[origin] -= from_pending
    self.credit[executor] += paid
    self.claimed[origin][executor] = already + paid
    log VoucherClaimed(origin=origin, executor=executor, cumulativeAmount=cumulative_amount, paid=paid)


# ---------------------------------------------------------------------------------------------
# duels: packing helpers
@pure
@internal
def _field(word: uint256, offset: uint256, bits: uint256) -> uint256:
    return (word >> offset) & ((1 << bits) - 1)


@pure
@internal
def _with(word: uint256, offset: uint256, bits: uint256, field: uint256) -> uint256:
    assert field < (1 << bits), "Duel: field overflow"
    mask: uint256 = ((1 << bits) - 1) << offset
    return (word & (~mask)) | (field << offset)


# duelInfo offsets
I_STATUS: constant(uint256) = 0
I_OUTCOME: constant(uint256) = 4
I_ORIGIN: constant(uint256) = 8
I_A: constant(uint256) = 32
I_B: constant(uint256) = 56
I_SEED: constant(uint256) = 80
I_COMMIT_END: constant(uint256) = 120
I_REVEAL_END: constant(uint256) = 160
LEAF_BITS: constant(uint256) = 24
BLOCK_BITS: constant(uint256) = 40
# duelPanel offsets
P_VOTES: constant(uint256) = 192
P_SIZE: constant(uint256) = 216


@view
@internal
def _owner(leaf: uint256) -> address:
    return sortition.leafOwner[leaf]


@view
@internal
def _panel_addresses(panel: uint256) -> DynArray[address, MAX_K]:
    out: DynArray[address, MAX_K] = []
    for i: uint256 in range(self._field(panel, P_SIZE, 4), bound=MAX_K):
        out.append(sortition.leafOwner[self._field(panel, i * LEAF_BITS, LEAF_BITS)])
    return out


@view
@internal
def _panel_position(panel: uint256, who: address) -> uint256:
    """@dev 1-based position of `who` on the panel, 0 if not a judge."""
    leaf: uint256 = self.nodes[who].leaf
    for i: uint256 in range(self._field(panel, P_SIZE, 4), bound=MAX_K):
        if self._field(panel, i * LEAF_BITS, LEAF_BITS) == leaf:
            # A stored leaf of 0 is also what an address that never registered reads; only the
            # owner of leaf 0 may take that seat. (Checked only then: saves a read per vote.)
            if leaf == 0 and sortition.leafOwner[0] != who:
                return 0
            return i + 1
    return 0


@internal
def _lock(node: address, until_block: uint256):
    if self.lockedUntil[node] < until_block:
        self.lockedUntil[node] = until_block


# ---------------------------------------------------------------------------------------------
# duels
@external
def openDuel(
    a: address, b: address, question_hash: bytes32, answer_a_hash: bytes32, answer_b_hash: bytes32
) -> uint256:
    """
    @notice Open a duel between executors `a` and `b` over one question. The origin (msg.sender,
            a registered node) escrows DUEL_ESCROW from its credit. Judges are drawn later from the
            hash of a block the origin cannot know now (SEED_DELAY blocks ahead). The duelists'
            stake is locked until the duel can no longer be open.
    """
    assert a != b, "Duel: duelists must differ"
    assert a != msg.sender and b != msg.sender, "Duel: origin cannot duel"
    assert self.nodes[msg.sender].active, "Registry: not registered"
    assert self.nodes[a].active and self.nodes[b].active, "Duel: duelist not registered"
    assert self.credit[msg.sender] >= DUEL_ESCROW, "Bank: insufficient credit"
    self.credit[msg.sender] -= DUEL_ESCROW
    duel_id: uint256 = self.duelCount + 1
    self.duelCount = duel_id
    seed_block: uint256 = block.number + SEED_DELAY
    info: uint256 = self._with(0, I_STATUS, 4, convert(DUEL_AWAITING_JUDGES, uint256))
    info = self._with(info, I_ORIGIN, LEAF_BITS, self.nodes[msg.sender].leaf)
    info = self._with(info, I_A, LEAF_BITS, self.nodes[a].leaf)
    info = self._with(info, I_B, LEAF_BITS, self.nodes[b].leaf)
    info = self._with(info, I_SEED, BLOCK_BITS, seed_block)
    self.duelInfo[duel_id] = info
    latest_end: uint256 = seed_block + DRAW_WINDOW + COMMIT_WINDOW + REVEAL_WINDOW + SETTLE_WINDOW
    self._lock(a, latest_end)
    self._lock(b, latest_end)
    log DuelOpened(
        duelId=duel_id,
        origin=msg.sender,
        a=a,
        b=b,
        questionHash=question_hash,
        answerAHash=answer_a_hash,
        answerBHash=answer_b_hash,
        seedBlock=seed_block,
        escrow=DUEL_ESCROW,
    )
    return duel_id


@view
@external
def getDuel(duel_id: uint256) -> (address, address, address, uint256, uint256, uint256, uint8, uint8):
    """
    @notice (origin, a, b, seedBlock, commitEnd, revealEnd, status, outcome). The question and answer
            hashes are recorded in the DuelOpened event only: nothing on-chain reads them, and keeping
            them out of storage saves 22k gas per duel.
    """
    info: uint256 = self.duelInfo[duel_id]
    assert info != 0, "Duel: unknown duel"
    return (
        self._owner(self._field(info, I_ORIGIN, LEAF_BITS)),
        self._owner(self._field(info, I_A, LEAF_BITS)),
        self._owner(self._field(info, I_B, LEAF_BITS)),
        self._field(info, I_SEED, BLOCK_BITS),
        self._field(info, I_COMMIT_END, BLOCK_BITS),
        self._field(info, I_REVEAL_END, BLOCK_BITS),
        convert(self._field(info, I_STATUS, 4), uint8),
        convert(self._field(info, I_OUTCOME, 4), uint8),
    )


@view
@external
def getJudges(duel_id: uint256) -> DynArray[address, MAX_K]:
    return self._panel_addresses(self.duelPanel[duel_id])


@view
@external
def getVotes(duel_id: uint256) -> DynArray[uint8, MAX_K]:
    """@notice Revealed votes in panel order (0 = not revealed)."""
    panel: uint256 = self.duelPanel[duel_id]
    out: DynArray[uint8, MAX_K] = []
    for i: uint256 in range(self._field(panel, P_SIZE, 4), bound=MAX_K):
        out.append(convert(self._field(panel, P_VOTES + 3 * i, 3), uint8))
    return out


@internal
def _cancel(duel_id: uint256, info: uint256, reason: uint8):
    """@dev The duelists served the request, so they keep their fee; the judges' part goes back."""
    self.duelInfo[duel_id] = self._with(info, I_STATUS, 4, convert(DUEL_CANCELLED, uint256))
    log DuelCancelled(duelId=duel_id, reason=reason)
    self._pay(duel_id, self._owner(self._field(info, I_A, LEAF_BITS)), DUELIST_FEE, REWARD_DUELIST_FEE)
    self._pay(duel_id, self._owner(self._field(info, I_B, LEAF_BITS)), DUELIST_FEE, REWARD_DUELIST_FEE)
    self._pay(
        duel_id,
        self._owner(self._field(info, I_ORIGIN, LEAF_BITS)),
        K_JUDGES * JUDGE_FEE,
        REWARD_ESCROW_REFUND,
    )


@external
def drawJudges(duel_id: uint256):
    """
    @notice Draw K_JUDGES judges by stake from the hash of the seed block. Anyone may call it
            between seedBlock+1 and seedBlock+DRAW_WINDOW. Duelists and the origin are excluded.
            With too little eligible stake the duel is cancelled.
    """
    info: uint256 = self.duelInfo[duel_id]
    assert self._field(info, I_STATUS, 4) == convert(DUEL_AWAITING_JUDGES, uint256), "Duel: not awaiting judges"
    seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
    assert block.number > seed_block, "Duel: seed block not mined yet"
    assert block.number <= seed_block + DRAW_WINDOW, "Duel: draw window over"
    seed: bytes32 = keccak256(abi_encode(blockhash(seed_block), duel_id))
    excluded: DynArray[uint256, MAX_K + 3] = [
        self._field(info, I_ORIGIN, LEAF_BITS),
        self._field(info, I_A, LEAF_BITS),
        self._field(info, I_B, LEAF_BITS),
    ]
    leaves: DynArray[uint256, sortition.MAX_DRAW] = sortition._draw(seed, K_JUDGES, excluded)
    if len(leaves) < K_JUDGES:
        self._cancel(duel_id, info, CANCEL_TOO_FEW_JUDGES)
        return
    commit_end: uint256 = block.number + COMMIT_WINDOW
    reveal_end: uint256 = commit_end + REVEAL_WINDOW
    panel: uint256 = self._with(0, P_SIZE, 4, len(leaves))
    chosen: DynArray[address, MAX_K] = []
    for i: uint256 in range(len(leaves), bound=MAX_K):
        panel = self._with(panel, i * LEAF_BITS, LEAF_BITS, leaves[i])
        judge: address = sortition.leafOwner[leaves[i]]
        chosen.append(judge)
        self._lock(judge, reveal_end + SETTLE_WINDOW)
    self.duelPanel[duel_id] = panel
    info = self._with(info, I_STATUS, 4, convert(DUEL_VOTING, uint256))
    info = self._with(info, I_COMMIT_END, BLOCK_BITS, commit_end)
    info = self._with(info, I_REVEAL_END, BLOCK_BITS, reveal_end)
    self.duelInfo[duel_id] = info
    log JudgesDrawn(duelId=duel_id, judges=chosen, commitEnd=commit_end, revealEnd=reveal_end)


@external
def cancelUndrawnDuel(duel_id: uint256):
    """@notice Anyone may cancel a duel whose judges were not drawn in time."""
    info: uint256 = self.duelInfo[duel_id]
    assert self._field(info, I_STATUS, 4) == convert(DUEL_AWAITING_JUDGES, uint256), "Duel: not awaiting judges"
    assert block.number > self._field(info, I_SEED, BLOCK_BITS) + DRAW_WINDOW, "Duel: draw window not over"
    self._cancel(duel_id, info, CANCEL_NOT_DRAWN)


@view
@external
def voteCommitment(duel_id: uint256, judge: address, vote: uint8, salt: bytes32) -> bytes32:
    """@notice The commitment a judge submits: binds chain, contract, duel, judge, vote and salt."""
    return keccak256(abi_encode(chain.id, self, duel_id, judge, vote, salt))


@external
def commitVote(duel_id: uint256, commitment: bytes32):
    """@notice A drawn judge commits to a hidden vote before the commit window ends."""
    info: uint256 = self.duelInfo[duel_id]
    assert self._field(info, I_STATUS, 4) == convert(DUEL_VOTING, uint256), "Duel: not in voting"
    assert block.number <= self._field(info, I_COMMIT_END, BLOCK_BITS), "Duel: commit window over"
    assert self._panel_position(self.duelPanel[duel_id], msg.sender) != 0, "Duel: not a judge of this duel"
    assert commitment != empty(bytes32), "Duel: empty commitment"
    assert self.commitments[duel_id][msg.sender] == empty(bytes32), "Duel: already committed"
    self.commitments[duel_id][msg.sender] = commitment
    log VoteCommitted(duelId=duel_id, judge=msg.sender, commitment=commitment)


@external
def revealVote(duel_id: uint256, vote: uint8, salt: bytes32):
    """@notice Reveal a committed vote (1=A, 2=B, 3=abstain, 4=no evidence) in the reveal window."""
    info: uint256 = self.duelInfo[duel_id]
    assert self._field(info, I_STATUS, 4) == convert(DUEL_VOTING, uint256), "Duel: not in voting"
    assert block.number > self._field(info, I_COMMIT_END, BLOCK_BITS), "Duel: reveal window not open"
    assert block.number <= self._field(info, I_REVEAL_END, BLOCK_BITS), "Duel: reveal window over"
    assert vote >= VOTE_A and vote <= VOTE_NO_EVIDENCE, "Duel: invalid vote"
    panel: uint256 = self.duelPanel[duel_id]
    pos: uint256 = self._panel_position(panel, msg.sender)
    assert pos != 0, "Duel: not a judge of this duel"
    assert self._field(panel, P_VOTES + 3 * (pos - 1), 3) == 0, "Duel: already revealed"
    c: bytes32 = self.commitments[duel_id][msg.sender]
    assert c != empty(bytes32), "Duel: no commitment"
    assert keccak256(abi_encode(chain.id, self, duel_id, msg.sender, vote, salt)) == c, "Duel: reveal does not match commitment"
    self.commitments[duel_id][msg.sender] = empty(bytes32)
    self.duelPanel[duel_id] = self._with(panel, P_VOTES + 3 * (pos - 1), 3, convert(vote, uint256))
    log VoteRevealed(duelId=duel_id, judge=msg.sender, vote=vote)


@internal
def _pay(duel_id: uint256, account: address, amount: uint256, reason: uint8):
    if amount == 0:
        return
    self.credit[account] += amount
    log DuelRewardPaid(duelId=duel_id, account=account, amount=amount, reason=reason)


@external
def settleDuel(duel_id: uint256):
    """
    @notice Settle a duel once the reveal window is over (or every judge has revealed). Anyone may
            call it; it succeeds exactly once. Majority wins: GAMMA_BPS of the loser's stake goes to
            the winner's credit; minority judges lose MINORITY_SLASH_BPS of their stake, abstaining
            and silent judges ABSTAIN_SLASH_BPS, pooled and split equally among majority judges.
            A tie moves no stake (and slashes nobody). If a majority of judges report no evidence,
            the duel is voided: nothing is slashed and the escrow is paid out as fees, so the origin
            gets back only the fees of judges that never revealed.
    """
    info: uint256 = self.duelInfo[duel_id]
    assert self._field(info, I_STATUS, 4) == convert(DUEL_VOTING, uint256), "Duel: not in voting"
    panel: uint256 = self.duelPanel[duel_id]
    size: uint256 = self._field(panel, P_SIZE, 4)
    judges: DynArray[address, MAX_K] = self._panel_addresses(panel)
    ballots: DynArray[uint8, MAX_K] = []
    n_a: uint256 = 0
    n_b: uint256 = 0
    n_no_ev: uint256 = 0
    n_revealed: uint256 = 0
    for i: uint256 in range(size, bound=MAX_K):
        v: uint8 = convert(self._field(panel, P_VOTES + 3 * i, 3), uint8)
        ballots.append(v)
        if v == VOTE_A:
            n_a += 1
        elif v == VOTE_B:
            n_b += 1
        elif v == VOTE_NO_EVIDENCE:
            n_no_ev += 1
        if v != VOTE_NONE:
            n_revealed += 1
    assert (
        block.number > self._field(info, I_REVEAL_END, BLOCK_BITS) or n_revealed == size
    ), "Duel: reveal window not over"
    a_leaf: uint256 = self._field(info, I_A, LEAF_BITS)
    b_leaf: uint256 = self._field(info, I_B, LEAF_BITS)
    a: address = self._owner(a_leaf)
    b: address = self._owner(b_leaf)

    outcome: uint8 = OUTCOME_TIE
    moved: uint256 = 0
    pool: uint256 = 0
    if n_no_ev * 2 > size:
        outcome = OUTCOME_VOIDED
    elif n_a != n_b:
        winner: address = a
        loser: address = b
        loser_leaf: uint256 = b_leaf
        win_vote: uint8 = VOTE_A
        lose_vote: uint8 = VOTE_B
        outcome = OUTCOME_A_WON
        if n_b > n_a:
            winner = b
            loser = a
            loser_leaf = a_leaf
            win_vote = VOTE_B
            lose_vote = VOTE_A
            outcome = OUTCOME_B_WON
        moved = self._slash(loser, loser_leaf, self._total_stake(loser) * GAMMA_BPS // BPS)
        if moved > 0:
            log StakeSlashed(duelId=duel_id, node=loser, amount=moved, reason=SLASH_LOST_DUEL)
            self._pay(duel_id, winner, moved, REWARD_STAKE_WON)
        majority: DynArray[address, MAX_K] = []
        for i: uint256 in range(size, bound=MAX_K):
            v: uint8 = ballots[i]
            if v == win_vote:
                majority.append(judges[i])
                continue
            bps: uint256 = ABSTAIN_SLASH_BPS
            reason: uint8 = SLASH_ABSTAINED_JUDGE
            if v == lose_vote:
                bps = MINORITY_SLASH_BPS
                reason = SLASH_MINORITY_JUDGE
            cut: uint256 = self._slash(
                judges[i], self._field(panel, i * LEAF_BITS, LEAF_BITS), self._total_stake(judges[i]) * bps // BPS
            )
            if cut > 0:
                pool += cut
                log StakeSlashed(duelId=duel_id, node=judges[i], amount=cut, reason=reason)
        # the winning side has at least one vote, so `majority` is never empty here
        share: uint256 = pool // len(majority)
        for i: uint256 in range(len(majority), bound=MAX_K):
            amount: uint256 = share
            if i == 0:
                amount += pool - share * len(majority)  # rounding dust, so no wei is lost
            self._pay(duel_id, majority[i], amount, REWARD_JUDGE_POOL)

    info = self._with(info, I_STATUS, 4, convert(DUEL_SETTLED, uint256))
    self.duelInfo[duel_id] = self._with(info, I_OUTCOME, 4, convert(outcome, uint256))
    # fees from the escrow: duelists always, judges that revealed; the rest back to the origin
    self._pay(duel_id, a, DUELIST_FEE, REWARD_DUELIST_FEE)
    self._pay(duel_id, b, DUELIST_FEE, REWARD_DUELIST_FEE)
    for i: uint256 in range(size, bound=MAX_K):
        if ballots[i] != VOTE_NONE:
            self._pay(duel_id, judges[i], JUDGE_FEE, REWARD_JUDGE_FEE)
    refund: uint256 = (K_JUDGES - n_revealed) * JUDGE_FEE
    if refund > 0:  # look the origin up only when it gets something back
        self._pay(duel_id, self._owner(self._field(info, I_ORIGIN, LEAF_BITS)), refund, REWARD_ESCROW_REFUND)
    log DuelSettled(duelId=duel_id, outcome=outcome, votesA=n_a, votesB=n_b, stakeMoved=moved, judgePool=pool)
