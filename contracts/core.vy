# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title WWW.Serve ledger, the logic: node registry, credits, stake, fee vouchers and duels
@notice The whole state and every function of the WWWServe contract, as a module. Two contracts
        export it (EIP-170 caps a contract at 24,576 bytes of code): `WWWServe` holds the state and
        exports a duel's steady path (open, answer, judges' commits and reveals, settle), so those
        run without an extra call; every other selector falls through to `WWWServeExt`, a
        copy of this module deployed first, that runs by delegatecall on WWWServe's storage and
        refuses to run on its own. To users it is one owner-less contract at one address with
        all parameters fixed at deployment (deposit-contract style).
        It holds every wei of the network in one balance, so the conservation invariant is exact:
            self.balance == sum(credit) + sum(pending withdrawals) + sum(active + unbonding stake)
                            + sum(escrow and appeal deposits of open duels) + reserve
        Sections: registry, credits, stake, fee vouchers (a unidirectional payment channel per
        origin->executor pair, EIP-712), duels (attested work, a challenger and judges drawn by
        frozen stake, commit-reveal, one appeal, settlement). Reverts carry "<Domain>: <problem>"
        reasons that the Python client maps to typed errors. docs/threat-model.md says which attack
        each duel rule answers.
"""

import sortition

initializes: sortition

# ---------------------------------------------------------------------------------------------
# limits (bounded gas everywhere)
MAX_MODELS: constant(uint256) = 16
MAX_K: constant(uint256) = 3  # judge seats of the first round; an appeal round has 2K+1 <= 8 seats
MAX_SEATS: constant(uint256) = 8
MAX_CHALLENGER_TRIES: constant(uint256) = 8  # draws tried for a challenger that serves the model
MAX_REQUEST_BYTES: constant(uint256) = 65536  # a request published on-chain when its origin withheld it
BPS: constant(uint256) = 10_000
WEI_PER_GWEI: constant(uint256) = 10**9
SECP256K1N_HALF: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168
LOW_128: constant(uint256) = (1 << 128) - 1
STAKE_MASK: constant(uint256) = (1 << 96) - 1

# votes
VOTE_NONE: constant(uint8) = 0
VOTE_A: constant(uint8) = 1
VOTE_B: constant(uint8) = 2
VOTE_ABSTAIN: constant(uint8) = 3
VOTE_NO_EVIDENCE: constant(uint8) = 4

# duel status
DUEL_NONE: constant(uint256) = 0
DUEL_AWAITING_ANSWER: constant(uint256) = 1  # the challenger B is drawn and answers
DUEL_AWAITING_REQUEST: constant(uint256) = 2  # B said it could not get the request: anyone may publish it
DUEL_JUDGING: constant(uint256) = 3  # a panel (round 1, or the appeal round 2) commits and reveals
DUEL_SETTLED: constant(uint256) = 4
DUEL_CANCELLED: constant(uint256) = 5

# settlement outcomes
OUTCOME_A_WON: constant(uint8) = 1
OUTCOME_B_WON: constant(uint8) = 2
OUTCOME_TIE: constant(uint8) = 3
OUTCOME_VOIDED: constant(uint8) = 4  # a majority of seats could not get the evidence

# slash reasons
SLASH_LOST_DUEL: constant(uint8) = 1
SLASH_INCOHERENT_JUDGE: constant(uint8) = 2  # voted for the side that lost the final verdict
SLASH_SILENT_JUDGE: constant(uint8) = 3  # a drawn seat that revealed nothing
SLASH_NO_ANSWER: constant(uint8) = 4  # a drawn challenger that never answered

# reward reasons
REWARD_STAKE_WON: constant(uint8) = 1
REWARD_RESERVE_BONUS: constant(uint8) = 2
REWARD_DUELIST_FEE: constant(uint8) = 3
REWARD_JUDGE_FEE: constant(uint8) = 4
REWARD_ESCROW_REFUND: constant(uint8) = 5
REWARD_APPEAL_REFUND: constant(uint8) = 6

# cancel reasons
CANCEL_NO_CHALLENGER: constant(uint8) = 1  # nobody serving the model could be drawn, or none was drawn in time
CANCEL_NO_ANSWER: constant(uint8) = 2  # the drawn challenger never answered (its bond went to the reserve)
CANCEL_REQUEST_WITHHELD: constant(uint8) = 3  # B could not get the request and nobody published it
CANCEL_NO_JUDGES: constant(uint8) = 4  # no eligible judge stake, or no panel drawn in its epoch

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH: constant(bytes32) = keccak256(
    "Voucher(address origin,address executor,uint256 cumulativeAmount)"
)
WORK_TYPEHASH: constant(bytes32) = keccak256(
    "Work(address origin,address executor,bytes32 requestId,bytes32 requestHash,bytes32 modelHash,bytes32 answerHash,bytes32 inspect,uint64 issuedAt)"
)

# ---------------------------------------------------------------------------------------------
# deployment parameters (immutable)
MIN_STAKE: public(immutable(uint256))  # active stake that makes a node routable and drawable
UNBONDING_PERIOD: public(immutable(uint256))  # seconds
WITHDRAWAL_NOTICE: public(immutable(uint256))  # seconds
K_JUDGES: public(immutable(uint256))  # seats of the first round; the appeal round has 2K+1
EPOCH_BLOCKS: public(immutable(uint256))  # draws in an epoch read the stake tree as the epoch began
ANSWER_WINDOW: public(immutable(uint256))  # blocks the challenger has to answer
COMMIT_WINDOW: public(immutable(uint256))  # blocks
REVEAL_WINDOW: public(immutable(uint256))  # blocks
APPEAL_WINDOW: public(immutable(uint256))  # blocks after the first round's reveals
PUBLISH_WINDOW: public(immutable(uint256))  # blocks to publish a request B could not get
ATTESTATION_TTL: public(immutable(uint256))  # seconds within which attested work can be dueled
DUEL_BOND: public(immutable(uint256))  # wei each duelist puts at risk (equal for both sides)
DUELIST_FEE: public(immutable(uint256))  # wei the origin pays the challenger for its answer
JUDGE_FEE: public(immutable(uint256))  # wei per seat that voted with the final verdict
JUDGE_PENALTY: public(immutable(uint256))  # wei per seat that voted against it
SILENT_PENALTY: public(immutable(uint256))  # wei per seat that revealed nothing
RESERVE_PAYOUT_BPS: public(immutable(uint256))  # share of the reserve paid per coherent seat
DUEL_ESCROW: public(immutable(uint256))  # DUELIST_FEE + K_JUDGES * JUDGE_FEE
# blocks a duel can stay open at most (appeal included): unbonding stake stays slashable that long
DUEL_SPAN_BLOCKS: public(immutable(uint256))
APPEAL_FEE: public(immutable(uint256))  # (2 K_JUDGES + 1) * JUDGE_FEE
# wei a node pays with its first registration and gets back with `releaseSlot` (the registry's slots are
# finite: holding one has a price, and a released one is handed to a later node)
REGISTRATION_BOND: public(immutable(uint256))
# blocks a released leaf waits before another node gets it: by then no duel can name its old owner
SLOT_COOLDOWN_BLOCKS: public(immutable(uint256))
NOT_HERE: immutable(address)  # the extension's own address (zero in WWWServe): code never runs there

# ---------------------------------------------------------------------------------------------
# registry
struct Node:
    pubkey: bytes32  # ed25519 public key that signs this node's results
    endpoint: String[256]
    models: DynArray[String[64], MAX_MODELS]
    metadata: String[1024]
    active: bool
    leaf: uint256  # sortition leaf (valid while `registeredOnce`)


nodes: public(HashMap[address, Node])
registeredOnce: public(HashMap[address, bool])  # holds a sortition leaf: registered, slot not released
pubkeyOwner: public(HashMap[bytes32, address])
activeNodeCount: public(uint256)
# model names by keccak256 -> a small id (1-based), assigned when a node first registers the model
modelId: public(HashMap[bytes32, uint256])
modelCount: public(uint256)
# per node and model id: first epoch it serves the model (low 128 bits) | first epoch it no longer
# does (high 128 bits, 0 = open). Changes count from the next epoch, like stake in the draw tree.
modelEpochs: HashMap[address, HashMap[uint256, uint256]]

# ---------------------------------------------------------------------------------------------
# credits and stake (wei)
credit: public(HashMap[address, uint256])
pendingWithdrawal: public(HashMap[address, uint256])
withdrawableAt: public(HashMap[address, uint256])
# stake, packed (one slot per node keeps a duel's reads and writes cheap): active stake (96 bits)
# | unbonding stake (96 bits) | stake bonded by open duels in which the node is a duelist, in gwei
# (64 bits). Bonded stake stays slashable until its duel ends.
accounts: HashMap[address, uint256]
# unbonding: end time (low 128 bits) | block of the request (high 128 bits)
unbonding: HashMap[address, uint256]
reserve: public(uint256)  # lost bonds and judge penalties, paid out to judges that vote with verdicts
# decided verdicts so far, decayed: A won (low 128 bits) | B won (high 128 bits). A coherent seat's pay
# is scaled by 1 / (2 x the share of verdicts like this one), so a judge that always votes for the
# side that usually wins earns less than one that reads the answers (see `_judge_round`).
verdicts: public(uint256)
VERDICT_DECAY_AT: constant(uint256) = 1024  # halve both counts when they reach this many together
MAX_WEIGHT: constant(uint256) = 4  # the scale stays within [1/4, 4]

# fee vouchers: cumulative amount already paid, per (origin, executor)
claimed: public(HashMap[address, HashMap[address, uint256]])

# ---------------------------------------------------------------------------------------------
# duels, packed (Vyper does not pack storage by itself), nodes named by their sortition leaf (20 bits:
# the tree has at most 2**20 leaves, and a leaf never changes owner):
# duelInfo: status(4) | outcome(4) | round(2) | b drawn(1) | request published(1) | origin(20) | a(20)
#           | b(20) | deadline(40) | seed block(40) | model id(24) | the first round's seats (3 x 20)
#           | their votes (3 x 3) | first round drawn(1) | bond (10: DUEL_BOND x this / 1023, set when B
#           is drawn: the smaller of DUEL_BOND and B's free stake)
#   deadline: the answer deadline (awaiting answer), the publish deadline (awaiting request), or the
#   current round's commit end (judging); a round's reveal end is its commit end + REVEAL_WINDOW. The
#   first round lives in this word, so its commits and reveals read and write one slot.
# duelPanel[id]: the appeal round: seat leaves (8 x 20 bits) | votes (8 x 3, from bit 160) | seats (4, bit
#           184). In memory every panel has this form. A judge drawn twice holds two seats, one vote.
# A duel's id is the work it is over: keccak256(abi_encode(origin, requestId)) >> 193 (63 bits, so it
# fits a signed 64-bit integer anywhere); an id in use means that work was dueled already.
duelInfo: HashMap[uint256, uint256]
duelPanel: HashMap[uint256, uint256]
# vote commitments (their high 128 bits), two per slot: [4 * (2 * id + round - 1) + seat // 2], where
# seat is the judge's first seat on the panel
commitments: HashMap[uint256, uint256]

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

event SlotReleased:
    node: indexed(address)
    leaf: uint256
    bond: uint256  # returned to the node's credit

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
    requestId: bytes32
    requestHash: bytes32
    modelHash: bytes32
    answerAHash: bytes32
    bond: uint256
    seedBlock: uint256
    answerDeadline: uint256
    escrow: uint256

event ChallengerDrawn:
    duelId: indexed(uint256)
    b: indexed(address)
    bond: uint256

event DuelAnswered:
    duelId: indexed(uint256)
    b: indexed(address)
    answerBHash: bytes32
    commitEnd: uint256

event RequestMissing:
    duelId: indexed(uint256)
    b: indexed(address)
    publishDeadline: uint256

event RequestPublished:
    duelId: indexed(uint256)
    request: Bytes[MAX_REQUEST_BYTES]
    seedBlock: uint256
    answerDeadline: uint256

event JudgesDrawn:
    duelId: indexed(uint256)
    round: uint256
    seats: DynArray[address, MAX_SEATS]
    commitEnd: uint256
    revealEnd: uint256

event VoteCommitted:
    duelId: indexed(uint256)
    judge: indexed(address)
    round: uint256
    commitment: bytes32

event VoteRevealed:
    duelId: indexed(uint256)
    judge: indexed(address)
    round: uint256
    vote: uint8

event DuelAppealed:
    duelId: indexed(uint256)
    appellant: indexed(address)
    deposit: uint256
    seedBlock: uint256
    commitEnd: uint256

event StakeSlashed:
    duelId: indexed(uint256)
    node: indexed(address)
    amount: uint256
    reason: uint8

event DuelRewardPaid:
    duelId: indexed(uint256)
    account: indexed(address)
    amount: uint256
    reason: uint8

event ReserveChanged:
    duelId: indexed(uint256)
    amount: uint256  # the reserve after the change

event DuelSettled:
    duelId: indexed(uint256)
    outcome: uint8
    round: uint256
    votesA: uint256
    votesB: uint256
    stakeMoved: uint256

event DuelCancelled:
    duelId: indexed(uint256)
    reason: uint8


# ---------------------------------------------------------------------------------------------
@deploy
def __init__(
    min_stake: uint256,
    unbonding_period: uint256,
    withdrawal_notice: uint256,
    k_judges: uint256,
    epoch_blocks: uint256,
    answer_window: uint256,
    commit_window: uint256,
    reveal_window: uint256,
    appeal_window: uint256,
    publish_window: uint256,
    attestation_ttl: uint256,
    duel_bond: uint256,
    duelist_fee: uint256,
    judge_fee: uint256,
    judge_penalty: uint256,
    silent_penalty: uint256,
    reserve_payout_bps: uint256,
    tree_depth: uint256,
    registration_bond: uint256,
    not_here: address,
):
    assert min_stake > 0, "Params: min_stake must be > 0"
    assert k_judges >= 1 and k_judges <= MAX_K, "Params: k_judges out of range"
    # a draw reads the tree frozen at its epoch's start and blockhash() reaches 256 blocks back
    assert epoch_blocks >= 2 and epoch_blocks <= 250, "Params: epoch_blocks out of range"
    # the answer window ends inside the seed block's epoch, with a block to spare, so settling a
    # no-show in that epoch can still work out who the challenger was
    assert answer_window >= 1 and answer_window + 1 < epoch_blocks, "Params: answer_window out of range"
    assert commit_window >= 1 and commit_window < epoch_blocks, "Params: commit_window out of range"
    assert reveal_window >= 1 and appeal_window >= 1 and publish_window >= 1, "Params: windows must be >= 1"
    assert attestation_ttl >= 1 and attestation_ttl <= unbonding_period, "Params: attestation_ttl out of range"
    assert duel_bond > 0 and duel_bond % WEI_PER_GWEI == 0 and duel_bond // WEI_PER_GWEI < 1 << 40, "Params: bad duel_bond"
    assert duel_bond <= min_stake, "Params: duel_bond above min_stake"
    assert reserve_payout_bps <= BPS, "Params: bps > 10000"
    sortition.__init__(tree_depth)
    MIN_STAKE = min_stake
    UNBONDING_PERIOD = unbonding_period
    WITHDRAWAL_NOTICE = withdrawal_notice
    K_JUDGES = k_judges
    EPOCH_BLOCKS = epoch_blocks
    ANSWER_WINDOW = answer_window
    COMMIT_WINDOW = commit_window
    REVEAL_WINDOW = reveal_window
    APPEAL_WINDOW = appeal_window
    PUBLISH_WINDOW = publish_window
    ATTESTATION_TTL = attestation_ttl
    DUEL_BOND = duel_bond
    DUELIST_FEE = duelist_fee
    JUDGE_FEE = judge_fee
    JUDGE_PENALTY = judge_penalty
    SILENT_PENALTY = silent_penalty
    RESERVE_PAYOUT_BPS = reserve_payout_bps
    DUEL_ESCROW = duelist_fee + k_judges * judge_fee
    DUEL_SPAN_BLOCKS = (
        3 * epoch_blocks + 2 * answer_window + publish_window + 2 * commit_window + 2 * reveal_window + appeal_window
    )
    APPEAL_FEE = (2 * k_judges + 1) * judge_fee
    REGISTRATION_BOND = registration_bond
    SLOT_COOLDOWN_BLOCKS = epoch_blocks + 2 * DUEL_SPAN_BLOCKS
    NOT_HERE = not_here


# ---------------------------------------------------------------------------------------------
# internal helpers
@view
@internal
def _home():
    """@dev The extension's code refuses to run on its own storage: only by delegatecall from WWWServe."""
    assert self != NOT_HERE, "WWWServe: call the WWWServe contract"


@view
@internal
def _domain_separator() -> bytes32:
    # computed, not an immutable: the extension runs this code at WWWServe's address
    return keccak256(abi_encode(EIP712_DOMAIN_TYPEHASH, keccak256("WWWServe"), keccak256("1"), chain.id, self))


@view
@external
def DOMAIN_SEPARATOR() -> bytes32:
    """@notice The EIP-712 domain of vouchers and work attestations (name WWWServe, version 1)."""
    return self._domain_separator()


@view
@external
def paramsDigest() -> bytes32:
    """@notice keccak256 of every deployment parameter: WWWServe checks its extension was built alike."""
    return self._params_digest()


@view
@internal
def _params_digest() -> bytes32:
    return keccak256(
        concat(
            abi_encode(MIN_STAKE, UNBONDING_PERIOD, WITHDRAWAL_NOTICE, K_JUDGES, EPOCH_BLOCKS, ANSWER_WINDOW),
            abi_encode(COMMIT_WINDOW, REVEAL_WINDOW, APPEAL_WINDOW, PUBLISH_WINDOW, ATTESTATION_TTL, DUEL_BOND),
            abi_encode(DUELIST_FEE, JUDGE_FEE, JUDGE_PENALTY, SILENT_PENALTY, RESERVE_PAYOUT_BPS, sortition.DEPTH),
            abi_encode(REGISTRATION_BOND),
        )
    )


@view
@internal
def _epoch() -> uint256:
    return block.number // EPOCH_BLOCKS


@view
@internal
def _account(node: address) -> (uint256, uint256, uint256):
    """@dev (active stake, unbonding stake, bonded stake), in wei."""
    word: uint256 = self.accounts[node]
    return (word & STAKE_MASK, (word >> 96) & STAKE_MASK, (word >> 192) * WEI_PER_GWEI)


@internal
def _put_account(node: address, active: uint256, unbonding: uint256, bonded: uint256):
    assert active <= STAKE_MASK and unbonding <= STAKE_MASK and bonded // WEI_PER_GWEI < 1 << 64, "Bank: stake overflow"
    self.accounts[node] = active | (unbonding << 96) | ((bonded // WEI_PER_GWEI) << 192)


@internal
def _set_weight(node: address, leaf: uint256, active: uint256):
    """@dev The draw weight is the active stake of a registered node holding >= MIN_STAKE."""
    w: uint256 = 0
    if self.nodes[node].active and active >= MIN_STAKE:
        w = active
    sortition._set(leaf, w, self._epoch())


@internal
def _sync_weight(node: address):
    if self.registeredOnce[node]:
        self._set_weight(node, self.nodes[node].leaf, self.accounts[node] & STAKE_MASK)


@view
@internal
def _free_stake(node: address) -> uint256:
    """@dev Slashable stake not bonded by an open duel (0 when slashes ate into the bonds)."""
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(node)
    if bonded >= act + unb:
        return 0
    return act + unb - bonded


@internal
def _take_stake(node: address, amount: uint256, unbond: uint256) -> uint256:
    """
    @dev Take up to `amount` from the node's active stake, then from its unbonding stake, and release
         `unbond` of its bonded stake. The draw weight is not touched (a path of tree writes per
         slash would cost more than the rest of a settlement): it catches up with the node's next
         stake change, or anyone's `syncWeight`.
    """
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(node)
    taken: uint256 = min(amount, act + unb)
    from_active: uint256 = min(taken, act)
    self._put_account(node, act - from_active, unb - (taken - from_active), bonded - min(bonded, unbond))
    return taken


@internal
def _validate_node_fields(pubkey: bytes32, models: DynArray[String[64], MAX_MODELS]):
    assert pubkey != empty(bytes32), "Registry: empty public key"
    owner: address = self.pubkeyOwner[pubkey]
    assert owner == empty(address) or owner == msg.sender, "Registry: public key already registered"
    assert len(models) > 0, "Registry: no models"


@internal
def _model_id(model: String[64]) -> uint256:
    """@dev The id of a model name, assigned on first use."""
    h: bytes32 = keccak256(model)
    mid: uint256 = self.modelId[h]
    if mid == 0:
        mid = self.modelCount + 1
        self.modelCount = mid
        self.modelId[h] = mid
    return mid


@view
@internal
def _serves(node: address, mid: uint256, epoch: uint256) -> bool:
    word: uint256 = self.modelEpochs[node][mid]
    start: uint256 = word & LOW_128
    stop: uint256 = word >> 128
    return start != 0 and start <= epoch and (stop == 0 or epoch < stop)


@internal
def _set_models(
    node: address, old: DynArray[String[64], MAX_MODELS], new: DynArray[String[64], MAX_MODELS]
):
    """
    @dev Models dropped stop counting from the next epoch, models added start from the next epoch,
         models kept stay as they are: a challenger draw within an epoch never sees a change.
    """
    nxt: uint256 = self._epoch() + 1
    new_ids: DynArray[uint256, MAX_MODELS] = []
    for m: String[64] in new:
        new_ids.append(self._model_id(m))
    for m: String[64] in old:
        mid: uint256 = self.modelId[keccak256(m)]
        if mid in new_ids:
            continue
        word: uint256 = self.modelEpochs[node][mid]
        start: uint256 = word & LOW_128
        if start == 0 or word >> 128 != 0:
            continue  # not served, or already leaving
        if start >= nxt:
            self.modelEpochs[node][mid] = 0  # never took effect
        else:
            self.modelEpochs[node][mid] = start | (nxt << 128)
    for mid: uint256 in new_ids:
        word: uint256 = self.modelEpochs[node][mid]
        start: uint256 = word & LOW_128
        stop: uint256 = word >> 128
        if start != 0 and (stop == 0 or stop >= nxt):
            self.modelEpochs[node][mid] = start  # served (or about to be): keep it, cancel a leave
        else:
            self.modelEpochs[node][mid] = nxt


@view
@external
def servesModel(node: address, model_hash: bytes32) -> bool:
    """@notice Whether `node` counts as serving the model (by keccak256 of its name) in this epoch."""
    mid: uint256 = self.modelId[model_hash]
    return mid != 0 and self._serves(node, mid, self._epoch())


# ---------------------------------------------------------------------------------------------
# registry
@payable
@external
def register(
    pubkey: bytes32,
    endpoint: String[256],
    models: DynArray[String[64], MAX_MODELS],
    metadata: String[1024],
):
    """
    @notice Register msg.sender (the operator wallet) as a node. The node id is the address. A node
            without a registry slot sends REGISTRATION_BOND with the call and gets a slot (a sortition
            leaf: a released one once SLOT_COOLDOWN_BLOCKS have passed, else a new one); a returning
            node that kept its slot sends nothing.
    """
    self._home()
    assert not self.nodes[msg.sender].active, "Registry: already registered"
    self._put_node(pubkey, endpoint, models, metadata)
    leaf: uint256 = 0
    if self.registeredOnce[msg.sender]:
        assert msg.value == 0, "Registry: slot held, send no bond"
        leaf = self.nodes[msg.sender].leaf
    else:
        assert msg.value == REGISTRATION_BOND, "Registry: send the registration bond"
        reuse_before: uint256 = 0
        if block.number > SLOT_COOLDOWN_BLOCKS:
            reuse_before = block.number - SLOT_COOLDOWN_BLOCKS
        leaf = sortition._allocate(msg.sender, reuse_before)
        self.nodes[msg.sender].leaf = leaf
        self.registeredOnce[msg.sender] = True
    self.nodes[msg.sender].active = True
    self.activeNodeCount += 1
    self._sync_weight(msg.sender)
    log NodeRegistered(
        node=msg.sender, pubkey=pubkey, endpoint=endpoint, models=models, metadata=metadata, leaf=leaf
    )


@internal
def _put_node(
    pubkey: bytes32,
    endpoint: String[256],
    models: DynArray[String[64], MAX_MODELS],
    metadata: String[1024],
):
    """@dev Check and store msg.sender's key, endpoint, models and metadata (register and updateNode)."""
    self._validate_node_fields(pubkey, models)
    old: bytes32 = self.nodes[msg.sender].pubkey
    if old != pubkey and self.pubkeyOwner[old] == msg.sender:
        self.pubkeyOwner[old] = empty(address)
    self.pubkeyOwner[pubkey] = msg.sender
    self._set_models(msg.sender, self.nodes[msg.sender].models, models)
    self.nodes[msg.sender].pubkey = pubkey
    self.nodes[msg.sender].endpoint = endpoint
    self.nodes[msg.sender].models = models
    self.nodes[msg.sender].metadata = metadata


@external
def updateNode(
    pubkey: bytes32,
    endpoint: String[256],
    models: DynArray[String[64], MAX_MODELS],
    metadata: String[1024],
):
    """@notice Change the node's key, endpoint, models or metadata."""
    self._home()
    assert self.nodes[msg.sender].active, "Registry: not registered"
    self._put_node(pubkey, endpoint, models, metadata)
    log NodeUpdated(node=msg.sender, pubkey=pubkey, endpoint=endpoint, models=models, metadata=metadata)


@external
def leave():
    """
    @notice Stop being routable and drawable (from the next epoch). Stake stays until unstaked, and
            work this node attested can still be dueled while its attestation is fresh.
    """
    self._home()
    assert self.nodes[msg.sender].active, "Registry: not registered"
    self.nodes[msg.sender].active = False
    self.pubkeyOwner[self.nodes[msg.sender].pubkey] = empty(address)
    self.activeNodeCount -= 1
    self._sync_weight(msg.sender)
    log NodeLeft(node=msg.sender)


@external
def releaseSlot():
    """
    @notice Give the registry slot back and get REGISTRATION_BOND back as free credit: for a node that
            left and holds no stake (active and unbonding withdrawn). Registering again takes a new
            slot and a new bond. The slot goes to a later registration after SLOT_COOLDOWN_BLOCKS,
            when no duel can name this node any more; what a still unsettled duel would owe this node
            after that is paid to nobody (the zero address) and what it would take is not there.
    """
    self._home()
    assert self.registeredOnce[msg.sender], "Registry: no slot held"
    assert not self.nodes[msg.sender].active, "Registry: leave first"
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(msg.sender)
    assert act + unb == 0, "Registry: withdraw the stake first"
    self.accounts[msg.sender] = 0  # bonds of duels that can no longer take anything
    leaf: uint256 = self.nodes[msg.sender].leaf
    self.nodes[msg.sender].leaf = 0
    self.registeredOnce[msg.sender] = False
    sortition._release(leaf)
    self.credit[msg.sender] += REGISTRATION_BOND
    log SlotReleased(node=msg.sender, leaf=leaf, bond=REGISTRATION_BOND)


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
    self._home()
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
    self._home()
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
    self._home()
    amount: uint256 = self.pendingWithdrawal[msg.sender]
    assert amount > 0, "Bank: no pending withdrawal"
    self.pendingWithdrawal[msg.sender] = 0
    self.credit[msg.sender] += amount
    log WithdrawalCancelled(account=msg.sender, amount=amount)


@nonreentrant
@external
def withdraw():
    """@notice Send the pending withdrawal to msg.sender once the notice has passed."""
    self._home()
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
    self._home()
    assert amount > 0, "Bank: zero amount"
    assert self.nodes[msg.sender].active, "Registry: not registered"
    assert self.credit[msg.sender] >= amount, "Bank: insufficient credit"
    self.credit[msg.sender] -= amount
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(msg.sender)
    self._put_account(msg.sender, act + amount, unb, bonded)
    self._set_weight(msg.sender, self.nodes[msg.sender].leaf, act + amount)
    log Staked(node=msg.sender, amount=amount)


@external
def requestUnstake(amount: uint256):
    """
    @notice Start unbonding `amount` of active stake for UNBONDING_PERIOD seconds. Unbonding stake
            is not routable but stays slashable, for at least DUEL_SPAN_BLOCKS blocks as well (so
            a judge drawn before it asked cannot leave before the duel ends). A new request
            restarts the period for the whole unbonding amount.
    """
    self._home()
    assert amount > 0, "Bank: zero amount"
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(msg.sender)
    assert act >= amount, "Bank: insufficient stake"
    self._put_account(msg.sender, act - amount, unb + amount, bonded)
    end: uint256 = block.timestamp + UNBONDING_PERIOD
    self.unbonding[msg.sender] = end | (block.number << 128)
    self._sync_weight(msg.sender)
    log UnstakeRequested(node=msg.sender, amount=amount, unbondingEnd=end)


@external
def withdrawStake():
    """
    @notice Move unbonded stake back to free credit: all of it except what open duels bond (a
            duelist's bond stays slashable until its duel ends).
    """
    self._home()
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(msg.sender)
    assert unb > 0, "Bank: nothing unbonding"
    word: uint256 = self.unbonding[msg.sender]
    assert block.timestamp >= word & LOW_128, "Bank: still unbonding"
    assert block.number > (word >> 128) + DUEL_SPAN_BLOCKS, "Bank: still unbonding"
    free: uint256 = 0
    if act + unb > bonded:
        free = act + unb - bonded
    amount: uint256 = min(unb, free)
    assert amount > 0, "Bank: stake bonded by open duels"
    self._put_account(msg.sender, act, unb - amount, bonded)
    self.credit[msg.sender] += amount
    log StakeWithdrawn(node=msg.sender, amount=amount)


@view
@external
def activeStake(node: address) -> uint256:
    return self.accounts[node] & STAKE_MASK


@view
@external
def unbondingStake(node: address) -> uint256:
    return (self.accounts[node] >> 96) & STAKE_MASK


@view
@external
def reserved(node: address) -> uint256:
    """@notice Stake bonded by the open duels in which `node` is a duelist."""
    return (self.accounts[node] >> 192) * WEI_PER_GWEI


@view
@external
def unbondingEnd(node: address) -> uint256:
    """@notice When the unbonding stake can be withdrawn (seconds; also DUEL_SPAN_BLOCKS blocks after
               the request, see `unbondingBlock`)."""
    return self.unbonding[node] & LOW_128


@view
@external
def unbondingBlock(node: address) -> uint256:
    """@notice The block of the node's last unstake request."""
    return self.unbonding[node] >> 128


@external
def syncWeight(node: address):
    """@notice Bring a node's draw weight in line with its stake after duel slashes (anyone may)."""
    self._home()
    self._sync_weight(node)


# ---------------------------------------------------------------------------------------------
# signatures (EIP-712)
@view
@internal
def _typed_digest(struct_hash: bytes32) -> bytes32:
    return keccak256(concat(x"1901", self._domain_separator(), struct_hash))


@pure
@internal
def _recover(digest: bytes32, signature: Bytes[65], malformed: String[40]) -> address:
    """@dev The signer of `digest`, or the zero address; low-s and v in {27, 28} only."""
    assert len(signature) == 65, malformed
    r: uint256 = convert(slice(signature, 0, 32), uint256)
    s: uint256 = convert(slice(signature, 32, 32), uint256)
    v: uint8 = convert(slice(signature, 64, 1), uint8)
    if v < 27:
        v += 27
    assert s <= SECP256K1N_HALF and (v == 27 or v == 28), malformed
    return ecrecover(digest, v, r, s)


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
    return self._typed_digest(keccak256(abi_encode(VOUCHER_TYPEHASH, origin, executor, cumulative_amount)))


@external
def claimVoucher(origin: address, executor: address, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Pay `executor` what `origin` owes it under the latest signed voucher. Anyone may submit
            it; the money always goes to the executor's credit. Pays from the origin's credit, then
            from its pending withdrawal; what cannot be paid now stays claimable later.
    """
    self._home()
    assert len(signature) == 65, "Voucher: bad signature length"
    already: uint256 = self.claimed[origin][executor]
    assert cumulative_amount > already, "Voucher: stale voucher"
    signer: address = self._recover(
        self._voucher_digest(origin, executor, cumulative_amount), signature, "Voucher: malformed signature"
    )
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
    """@dev `word` with a field replaced; callers pass values that fit (block numbers are checked at
            open, leaves fit 20 bits since the tree has at most 2**20 leaves)."""
    mask: uint256 = ((1 << bits) - 1) << offset
    return (word & (~mask)) | (field << offset)


# duelInfo offsets
I_STATUS: constant(uint256) = 0
I_OUTCOME: constant(uint256) = 4
I_ROUND: constant(uint256) = 8
I_B_DRAWN: constant(uint256) = 10
I_PUBLISHED: constant(uint256) = 11
I_ORIGIN: constant(uint256) = 12
I_A: constant(uint256) = 32
I_B: constant(uint256) = 52
I_DEADLINE: constant(uint256) = 72
I_SEED: constant(uint256) = 112
I_MODEL: constant(uint256) = 152
I_SEATS: constant(uint256) = 176  # the first round's seats, 20 bits each
I_VOTES: constant(uint256) = 236  # their votes, 3 bits each
I_DRAWN: constant(uint256) = 245  # the first round's seats are drawn
I_BOND: constant(uint256) = 246  # both duelists' bond, in 1023rds of DUEL_BOND (set when B is drawn)
BOND_UNITS: constant(uint256) = 1023
LEAF_BITS: constant(uint256) = 20
BLOCK_BITS: constant(uint256) = 40
# panel offsets (duelPanel words, and every panel in memory)
P_VOTES: constant(uint256) = 160
P_SIZE: constant(uint256) = 184


@view
@internal
def _party(info: uint256, leaf: uint256) -> address:
    """@dev The node `leaf` names in the duel `info`: the leaf's owner, or nobody (the zero address,
            whose stake is 0 and whose credit nobody can spend) once a later node took the leaf.
            A leaf is handed on only after no duel can name its old owner any more (`releaseSlot`),
            and every party a duel names is named by its seed block + DUEL_SPAN_BLOCKS."""
    word: uint256 = sortition.leafSlot[leaf]
    if word >> 160 > self._field(info, I_SEED, BLOCK_BITS) + DUEL_SPAN_BLOCKS:
        return empty(address)
    return convert(word & sortition.ADDRESS_MASK, address)


@pure
@internal
def _status(info: uint256) -> uint256:
    return info & 15


@pure
@internal
def _duel_bond(info: uint256, duel_bond: uint256) -> uint256:
    """@dev Each duelist's bond: DUEL_BOND until B is drawn, then the smaller of it and B's free stake (in
            1023rds of DUEL_BOND, whole gwei, as stake bonds are kept)."""
    if (info >> I_B_DRAWN) & 1 == 0:
        return duel_bond
    return duel_bond * ((info >> I_BOND) & BOND_UNITS) // BOND_UNITS // WEI_PER_GWEI * WEI_PER_GWEI


@pure
@internal
def _next_epoch_start(block_number: uint256, epoch_blocks: uint256) -> uint256:
    return (block_number // epoch_blocks + 1) * epoch_blocks


@view
@internal
def _panel_of(duel_id: uint256, info: uint256, round: uint256) -> uint256:
    """@dev A round's panel in the panel form (0 if not drawn): the first round from `info`."""
    if round != 1:
        return self.duelPanel[duel_id]
    if (info >> I_DRAWN) & 1 == 0:
        return 0
    panel: uint256 = K_JUDGES << P_SIZE
    for i: uint256 in range(K_JUDGES, bound=MAX_K):
        panel |= ((info >> (I_SEATS + LEAF_BITS * i)) & ((1 << LEAF_BITS) - 1)) << (LEAF_BITS * i)
        panel |= ((info >> (I_VOTES + 3 * i)) & 7) << (P_VOTES + 3 * i)
    return panel


@view
@internal
def _with_panel(duel_id: uint256, info: uint256, round: uint256, panel: uint256) -> uint256:
    """@dev Store a round's panel: the appeal round in duelPanel; the first round into the returned info
            word (the caller stores it)."""
    if round != 1:
        return info
    out: uint256 = info | (1 << I_DRAWN)
    for i: uint256 in range(K_JUDGES, bound=MAX_K):
        out = self._with(out, I_SEATS + LEAF_BITS * i, LEAF_BITS, (panel >> (LEAF_BITS * i)) & ((1 << LEAF_BITS) - 1))
        out = self._with(out, I_VOTES + 3 * i, 3, (panel >> (P_VOTES + 3 * i)) & 7)
    return out


@view
@internal
def _seats(info: uint256, panel: uint256) -> DynArray[address, MAX_SEATS]:
    out: DynArray[address, MAX_SEATS] = []
    for i: uint256 in range(self._field(panel, P_SIZE, 4), bound=MAX_SEATS):
        out.append(self._party(info, self._field(panel, i * LEAF_BITS, LEAF_BITS)))
    return out


@view
@internal
def _seat_mask(panel: uint256, who: address) -> uint256:
    """@dev Bit i set when seat i is `who`'s (0 if not a judge of this panel)."""
    leaf: uint256 = self.nodes[who].leaf
    if leaf == 0 and sortition._owner(0) != who:
        return 0  # a stored leaf of 0 is also what an address that never registered reads
    mask: uint256 = 0
    for i: uint256 in range(self._field(panel, P_SIZE, 4), bound=MAX_SEATS):
        if self._field(panel, i * LEAF_BITS, LEAF_BITS) == leaf:
            mask |= 1 << i
    return mask


@pure
@internal
def _first_seat(mask: uint256) -> uint256:
    for i: uint256 in range(MAX_SEATS):
        if mask & (1 << i) != 0:
            return i
    return 0


@internal
def _pay(duel_id: uint256, account: address, amount: uint256, reason: uint8):
    if amount == 0:
        return
    self.credit[account] += amount
    log DuelRewardPaid(duelId=duel_id, account=account, amount=amount, reason=reason)


@internal
def _bond(node: address, amount: uint256):
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(node)
    self._put_account(node, act, unb, bonded + amount)


@internal
def _unbond(node: address, amount: uint256):
    self._take_stake(node, 0, amount)


# ---------------------------------------------------------------------------------------------
# duels: opening over attested work
@view
@internal
def _work_digest(
    origin: address,
    executor: address,
    request_id: bytes32,
    request_hash: bytes32,
    model_hash: bytes32,
    answer_hash: bytes32,
    inspect: bytes32,
    issued_at: uint64,
) -> bytes32:
    return self._typed_digest(
        keccak256(
            abi_encode(
                WORK_TYPEHASH, origin, executor, request_id, request_hash, model_hash, answer_hash, inspect, issued_at
            )
        )
    )


@view
@external
def workDigest(
    origin: address,
    executor: address,
    request_id: bytes32,
    request_hash: bytes32,
    model_hash: bytes32,
    answer_hash: bytes32,
    inspect: bytes32,
    issued_at: uint64,
) -> bytes32:
    """
    @notice The EIP-712 digest an executor signs with its wallet key when it hands back an answer:
            Work(origin, executor, requestId, requestHash, modelHash, answerHash, inspect, issuedAt).
            `inspect` is the origin's commitment keccak256(abi_encode(requestId, wantsDuel, salt)),
            sent with the request before the answer existed.
    """
    return self._work_digest(origin, executor, request_id, request_hash, model_hash, answer_hash, inspect, issued_at)


@pure
@external
def duelIdOf(origin: address, request_id: bytes32) -> uint256:
    """@notice The id a duel over this origin's request gets (whether or not it was opened)."""
    return convert(keccak256(abi_encode(origin, request_id)), uint256) >> 193


@pure
@external
def inspectCommitment(request_id: bytes32, wants_duel: bool, salt: bytes32) -> bytes32:
    """@notice The commitment an origin sends with a request: whether it will duel the answer."""
    return keccak256(abi_encode(request_id, wants_duel, salt))


@view
@internal
def _check_work(
    origin: address,
    a: address,
    request_id: bytes32,
    request_hash: bytes32,
    model_hash: bytes32,
    answer_hash: bytes32,
    inspect_salt: bytes32,
    issued_at: uint64,
    signature: Bytes[65],
):
    """@dev A signed `a` the work attestation for `origin`, with the origin's commitment to duel it."""
    inspect: bytes32 = keccak256(abi_encode(request_id, True, inspect_salt))
    digest: bytes32 = self._work_digest(origin, a, request_id, request_hash, model_hash, answer_hash, inspect, issued_at)
    signer: address = self._recover(digest, signature, "Duel: malformed attestation")
    assert signer != empty(address) and signer == a, "Duel: bad attestation"


@external
def openDuel(
    a: address,
    request_id: bytes32,
    request_hash: bytes32,
    model_hash: bytes32,
    answer_hash: bytes32,
    inspect_salt: bytes32,
    issued_at: uint64,
    signature: Bytes[65],
) -> uint256:
    """
    @notice Duel the answer executor `a` gave msg.sender (the origin, a registered node). `a` must
            have signed the Work attestation over exactly this request, model and answer, with the
            origin's commitment to duel it (`inspect_salt` opens it), within ATTESTATION_TTL; each
            piece of work can be dueled once. The origin escrows DUEL_ESCROW; DUEL_BOND of `a`'s
            stake is bonded. The challenger B is drawn at the next epoch's first block, by the stake
            frozen then, among the nodes serving the model (never the origin, never `a`).
    """
    assert self.nodes[msg.sender].active, "Registry: not registered"
    assert a != msg.sender, "Duel: origin cannot duel"
    assert self.registeredOnce[a], "Duel: duelist not registered"
    assert block.timestamp <= convert(issued_at, uint256) + ATTESTATION_TTL, "Duel: attestation expired"
    self._check_work(msg.sender, a, request_id, request_hash, model_hash, answer_hash, inspect_salt, issued_at, signature)
    mid: uint256 = self.modelId[model_hash]
    assert mid != 0, "Duel: unknown model"
    duel_id: uint256 = convert(keccak256(abi_encode(msg.sender, request_id)), uint256) >> 193
    assert self.duelInfo[duel_id] == 0, "Duel: work already dueled"
    act: uint256 = 0
    unb: uint256 = 0
    bonded: uint256 = 0
    act, unb, bonded = self._account(a)
    assert act + unb >= bonded + DUEL_BOND, "Duel: duelist stake too low"
    assert self.credit[msg.sender] >= DUEL_ESCROW, "Bank: insufficient credit"
    self.credit[msg.sender] -= DUEL_ESCROW
    self._put_account(a, act, unb, bonded + DUEL_BOND)
    seed_block: uint256 = self._next_epoch_start(block.number, EPOCH_BLOCKS)
    deadline: uint256 = seed_block + ANSWER_WINDOW
    assert deadline + DUEL_SPAN_BLOCKS < 1 << BLOCK_BITS and mid < 1 << 24, "Duel: field overflow"
    self.duelInfo[duel_id] = (
        DUEL_AWAITING_ANSWER
        | (self.nodes[msg.sender].leaf << I_ORIGIN)
        | (self.nodes[a].leaf << I_A)
        | (deadline << I_DEADLINE)
        | (seed_block << I_SEED)
        | (mid << I_MODEL)
    )
    log DuelOpened(
        duelId=duel_id,
        origin=msg.sender,
        a=a,
        requestId=request_id,
        requestHash=request_hash,
        modelHash=model_hash,
        answerAHash=answer_hash,
        bond=DUEL_BOND,
        seedBlock=seed_block,
        answerDeadline=deadline,
        escrow=DUEL_ESCROW,
    )
    return duel_id


# ---------------------------------------------------------------------------------------------
# duels: the challenger
@view
@internal
def _challenger_leaf(duel_id: uint256, info: uint256) -> (bool, uint256):
    """
    @dev The challenger: the first of up to MAX_CHALLENGER_TRIES draws (by the stake frozen at the
         seed block's epoch, from the seed block's hash) whose owner serves the duel's model in that
         epoch. It reads nothing that can change within the epoch, so nobody (the drawn node least)
         can change who it is once the seed is known. Only valid within the seed block's epoch.
    """
    seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
    epoch: uint256 = seed_block // EPOCH_BLOCKS
    mid: uint256 = self._field(info, I_MODEL, 24)
    seed: bytes32 = keccak256(abi_encode(blockhash(seed_block), duel_id, convert(0, uint256)))
    excluded: DynArray[uint256, sortition.MAX_EXCLUDED] = [
        self._field(info, I_ORIGIN, LEAF_BITS),
        self._field(info, I_A, LEAF_BITS),
    ]
    for i: uint256 in range(MAX_CHALLENGER_TRIES):
        drawn: DynArray[uint256, sortition.MAX_DRAW] = sortition._draw(
            keccak256(concat(seed, convert(i, bytes32))), 1, excluded, epoch
        )
        if len(drawn) == 0:
            return (False, 0)
        if self._serves(sortition._owner(drawn[0]), mid, epoch):
            return (True, drawn[0])
    return (False, 0)


@view
@external
def challengerOf(duel_id: uint256) -> address:
    """
    @notice The duel's challenger: the one recorded, or (after the seed block, within the answer
            window, before anyone recorded it) the one a draw would pick now. The zero address when
            there is none (yet).
    """
    info: uint256 = self.duelInfo[duel_id]
    assert info != 0, "Duel: unknown duel"
    if self._field(info, I_B_DRAWN, 1) == 1:
        return self._party(info, self._field(info, I_B, LEAF_BITS))
    seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
    if self._status(info) != DUEL_AWAITING_ANSWER or block.number <= seed_block:
        return empty(address)  # the seed block's hash is known once a later block exists
    if block.number > self._field(info, I_DEADLINE, BLOCK_BITS):
        return empty(address)
    found: bool = False
    leaf: uint256 = 0
    found, leaf = self._challenger_leaf(duel_id, info)
    if not found:
        return empty(address)
    return self._party(info, leaf)


@internal
def _cancel(duel_id: uint256, info: uint256, reason: uint8):
    """@dev End the duel without a verdict: release the bonds; the callers settle the money."""
    self.duelInfo[duel_id] = self._with(info, I_STATUS, 4, DUEL_CANCELLED)
    bond: uint256 = self._duel_bond(info, DUEL_BOND)
    self._unbond(self._party(info, self._field(info, I_A, LEAF_BITS)), bond)
    if self._field(info, I_B_DRAWN, 1) == 1:
        self._unbond(self._party(info, self._field(info, I_B, LEAF_BITS)), bond)
    log DuelCancelled(duelId=duel_id, reason=reason)


@internal
def _draw_challenger(duel_id: uint256, info: uint256) -> uint256:
    """@dev Record the challenger and bond the smaller of DUEL_BOND and its free stake (A's bond is lowered
            to the same). Returns the new info word, or 0 when the duel was cancelled for want of a
            challenger."""
    seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
    assert block.number > seed_block, "Duel: seed block not mined yet"
    assert block.number <= self._field(info, I_DEADLINE, BLOCK_BITS), "Duel: answer window over"
    found: bool = False
    leaf: uint256 = 0
    found, leaf = self._challenger_leaf(duel_id, info)
    if not found:
        self._cancel(duel_id, info, CANCEL_NO_CHALLENGER)
        self._pay(duel_id, self._party(info, self._field(info, I_ORIGIN, LEAF_BITS)), DUEL_ESCROW, REWARD_ESCROW_REFUND)
        return 0
    b: address = self._party(info, leaf)
    # equal bonds: B cannot lose more than its free stake, so A does not risk more either
    units: uint256 = min(BOND_UNITS, self._free_stake(b) * BOND_UNITS // DUEL_BOND)
    bond: uint256 = self._duel_bond(units << I_BOND | 1 << I_B_DRAWN, DUEL_BOND)
    if bond < DUEL_BOND:
        self._unbond(self._party(info, self._field(info, I_A, LEAF_BITS)), DUEL_BOND - bond)
    self._bond(b, bond)
    log ChallengerDrawn(duelId=duel_id, b=b, bond=bond)
    return self._with(info, I_B, LEAF_BITS, leaf) | (1 << I_B_DRAWN) | (units << I_BOND)


@external
def drawChallenger(duel_id: uint256):
    """
    @notice Record the duel's challenger within the answer window (anyone may; the challenger's own
            answer does it too). A recorded challenger that does not answer loses its bond. With no
            drawable node serving the model the duel is cancelled and the escrow refunded.
    """
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_AWAITING_ANSWER, "Duel: not awaiting an answer"
    assert self._field(info, I_B_DRAWN, 1) == 0, "Duel: challenger already drawn"
    info2: uint256 = self._draw_challenger(duel_id, info)
    if info2 != 0:
        self.duelInfo[duel_id] = info2


@external
def answerDuel(duel_id: uint256, answer_hash: bytes32):
    """
    @notice The challenger commits to its answer's hash (keccak256 of its UTF-8 text) within the
            answer window; the first round's seats are drawn with it, from the same seed block (so
            nobody picks the moment, and no later step re-draws them). A zero hash says B could not
            get the request from the origin or from A: then anyone may publish the request on-chain
            within PUBLISH_WINDOW (`publishRequest`), after which B must answer (a second zero hash
            is refused), or the duel is cancelled at the origin's expense.
    """
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_AWAITING_ANSWER, "Duel: not awaiting an answer"
    if self._field(info, I_B_DRAWN, 1) == 0:
        info = self._draw_challenger(duel_id, info)
        assert info != 0, "Duel: no challenger"
    else:
        assert block.number > self._field(info, I_SEED, BLOCK_BITS), "Duel: seed block not mined yet"
        assert block.number <= self._field(info, I_DEADLINE, BLOCK_BITS), "Duel: answer window over"
    b: address = self._party(info, self._field(info, I_B, LEAF_BITS))
    assert b == msg.sender, "Duel: not the challenger"
    if (info >> I_DRAWN) & 1 == 0:
        leaves: DynArray[uint256, sortition.MAX_DRAW] = self._draw_panel_leaves(duel_id, info, 1)
        if len(leaves) == 0:
            self._cancel(duel_id, info, CANCEL_NO_JUDGES)
            self._pay(duel_id, b, DUELIST_FEE, REWARD_DUELIST_FEE)
            self._pay(duel_id, self._party(info, self._field(info, I_ORIGIN, LEAF_BITS)), DUEL_ESCROW - DUELIST_FEE, REWARD_ESCROW_REFUND)
            return
        info = info | (1 << I_DRAWN)
        for i: uint256 in range(len(leaves), bound=MAX_K):
            info |= leaves[i] << (I_SEATS + LEAF_BITS * i)
    if answer_hash == empty(bytes32):
        assert self._field(info, I_PUBLISHED, 1) == 0, "Duel: request already published"
        deadline: uint256 = block.number + PUBLISH_WINDOW
        info = self._with(info, I_STATUS, 4, DUEL_AWAITING_REQUEST)
        self.duelInfo[duel_id] = self._with(info, I_DEADLINE, BLOCK_BITS, deadline)
        log RequestMissing(duelId=duel_id, b=b, publishDeadline=deadline)
        return
    commit_end: uint256 = block.number + COMMIT_WINDOW
    info = self._with(info, I_STATUS, 4, DUEL_JUDGING)
    info = self._with(info, I_ROUND, 2, 1)
    info = self._with(info, I_DEADLINE, BLOCK_BITS, commit_end)
    self.duelInfo[duel_id] = info
    log DuelAnswered(duelId=duel_id, b=b, answerBHash=answer_hash, commitEnd=commit_end)
    log JudgesDrawn(
        duelId=duel_id,
        round=1,
        seats=self._seats(info, self._panel_of(duel_id, info, 1)),
        commitEnd=commit_end,
        revealEnd=commit_end + REVEAL_WINDOW,
    )


@external
def publishRequest(
    duel_id: uint256,
    request_id: bytes32,
    request_hash: bytes32,
    model_hash: bytes32,
    answer_hash: bytes32,
    inspect_salt: bytes32,
    issued_at: uint64,
    signature: Bytes[65],
    request: Bytes[MAX_REQUEST_BYTES],
):
    """
    @notice Publish the request of a duel whose challenger could not get it: anyone may, with A's
            attestation (the same arguments as `openDuel`) and the request bytes hashing to its
            requestHash. B then answers in the next epoch's answer window (its seats stay the ones
            drawn when it said it had no request).
    """
    self._home()
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_AWAITING_REQUEST, "Duel: request not missing"
    assert block.number <= self._field(info, I_DEADLINE, BLOCK_BITS), "Duel: publish window over"
    origin: address = self._party(info, self._field(info, I_ORIGIN, LEAF_BITS))
    a: address = self._party(info, self._field(info, I_A, LEAF_BITS))
    assert convert(keccak256(abi_encode(origin, request_id)), uint256) >> 193 == duel_id, "Duel: not this duel's work"
    self._check_work(origin, a, request_id, request_hash, model_hash, answer_hash, inspect_salt, issued_at, signature)
    assert keccak256(request) == request_hash, "Duel: request does not match its hash"
    seed_block: uint256 = self._next_epoch_start(block.number, EPOCH_BLOCKS)
    deadline: uint256 = seed_block + ANSWER_WINDOW
    info = self._with(info, I_STATUS, 4, DUEL_AWAITING_ANSWER) | (1 << I_PUBLISHED)
    info = self._with(info, I_SEED, BLOCK_BITS, seed_block)
    self.duelInfo[duel_id] = self._with(info, I_DEADLINE, BLOCK_BITS, deadline)
    log RequestPublished(duelId=duel_id, request=request, seedBlock=seed_block, answerDeadline=deadline)


# ---------------------------------------------------------------------------------------------
# duels: judges
@view
@internal
def _draw_panel_leaves(duel_id: uint256, info: uint256, round: uint256) -> DynArray[uint256, sortition.MAX_DRAW]:
    """@dev A round's seats: K (first round) or 2K+1 (appeal) draws with replacement, by the stake frozen
            at the seed block's epoch, from its hash. Nobody is excluded: an operator can always seat its
            other identities on its own duels, so excluding the one identity a duel names would only
            reward splitting stake (seats follow stake, however it is split)."""
    seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
    seats: uint256 = K_JUDGES
    if round != 1:
        seats = 2 * K_JUDGES + 1
    seed: bytes32 = keccak256(abi_encode(blockhash(seed_block), duel_id, round))
    return sortition._draw(seed, seats, [], seed_block // EPOCH_BLOCKS)


@view
@external
def previewJudges(duel_id: uint256) -> DynArray[address, MAX_SEATS]:
    """
    @notice The current round's seats: the ones drawn, or (for the appeal round, in its commit window,
            before anyone drew them) the ones a draw would pick now. Empty when there are none (yet).
    """
    info: uint256 = self.duelInfo[duel_id]
    assert info != 0, "Duel: unknown duel"
    round: uint256 = self._field(info, I_ROUND, 2)
    if self._status(info) != DUEL_JUDGING:
        return []
    panel: uint256 = self._panel_of(duel_id, info, round)
    if panel != 0:
        return self._seats(info, panel)
    seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
    if block.number <= seed_block or block.number > self._field(info, I_DEADLINE, BLOCK_BITS):
        return []
    out: DynArray[address, MAX_SEATS] = []
    leaves: DynArray[uint256, sortition.MAX_DRAW] = self._draw_panel_leaves(duel_id, info, round)
    for leaf: uint256 in leaves:
        out.append(self._party(info, leaf))
    return out


@internal
def _draw_appeal_panel(duel_id: uint256, info: uint256) -> uint256:
    """@dev Draw and store the appeal round's seats. Returns the panel word, 0 when there is no
            eligible judge stake."""
    assert block.number > self._field(info, I_SEED, BLOCK_BITS), "Duel: seed block not mined yet"
    commit_end: uint256 = self._field(info, I_DEADLINE, BLOCK_BITS)
    assert block.number <= commit_end, "Duel: commit window over"
    leaves: DynArray[uint256, sortition.MAX_DRAW] = self._draw_panel_leaves(duel_id, info, 2)
    if len(leaves) == 0:
        return 0
    panel: uint256 = len(leaves) << P_SIZE
    seats: DynArray[address, MAX_SEATS] = []
    for i: uint256 in range(len(leaves), bound=MAX_SEATS):
        panel |= leaves[i] << (i * LEAF_BITS)
        seats.append(sortition._owner(leaves[i]))
    self.duelPanel[duel_id] = panel
    log JudgesDrawn(duelId=duel_id, round=2, seats=seats, commitEnd=commit_end, revealEnd=commit_end + REVEAL_WINDOW)
    return panel


@external
def drawJudges(duel_id: uint256):
    """@notice Draw the appeal round's seats (anyone may, in its commit window; a judge's first commit
               does it too; the first round's are drawn with B's answer). With no eligible judge
               stake nothing is drawn."""
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_JUDGING, "Duel: not judging"
    assert self._field(info, I_ROUND, 2) == 2 and self.duelPanel[duel_id] == 0, "Duel: judges already drawn"
    assert self._draw_appeal_panel(duel_id, info) != 0, "Duel: no judges"


@view
@external
def voteCommitment(duel_id: uint256, round: uint256, judge: address, vote: uint8, salt: bytes32) -> bytes32:
    """@notice The commitment a judge submits: binds chain, contract, duel, round, judge, vote and salt
               (the contract keeps its first 16 bytes)."""
    return keccak256(abi_encode(chain.id, self, duel_id, round, judge, vote, salt))


@view
@external
def commitmentOf(duel_id: uint256, round: uint256, judge: address) -> bytes16:
    """@notice The first 16 bytes of the judge's commitment in that round (zero if none)."""
    mask: uint256 = self._seat_mask(self._panel_of(duel_id, self.duelInfo[duel_id], round), judge)
    if mask == 0:
        return empty(bytes16)
    seat: uint256 = self._first_seat(mask)
    word: uint256 = self.commitments[4 * (2 * duel_id + round - 1) + seat // 2]
    return convert(convert((word >> (128 * (seat % 2))) & LOW_128, uint128), bytes16)


@external
def commitVote(duel_id: uint256, commitment: bytes32):
    """@notice A judge of the current round commits to a hidden vote before the commit window ends (the
               first commit of an appeal round draws its seats, if nobody did)."""
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_JUDGING, "Duel: not judging"
    assert block.number <= self._field(info, I_DEADLINE, BLOCK_BITS), "Duel: commit window over"
    round: uint256 = self._field(info, I_ROUND, 2)
    panel: uint256 = self._panel_of(duel_id, info, round)
    if panel == 0:
        panel = self._draw_appeal_panel(duel_id, info)
        assert panel != 0, "Duel: no judges"
    mask: uint256 = self._seat_mask(panel, msg.sender)
    assert mask != 0, "Duel: not a judge of this duel"
    c: uint256 = convert(commitment, uint256) >> 128
    assert c != 0, "Duel: empty commitment"
    seat: uint256 = self._first_seat(mask)
    half: uint256 = 128 * (seat % 2)
    key: uint256 = 4 * (2 * duel_id + round - 1) + seat // 2
    word: uint256 = self.commitments[key]
    assert (word >> half) & LOW_128 == 0, "Duel: already committed"
    self.commitments[key] = word | (c << half)
    log VoteCommitted(duelId=duel_id, judge=msg.sender, round=round, commitment=commitment)


@external
def revealVote(duel_id: uint256, vote: uint8, salt: bytes32):
    """@notice Reveal a committed vote (1=A, 2=B, 3=abstain, 4=no evidence) in the reveal window; it
               counts once per seat the judge holds."""
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_JUDGING, "Duel: not judging"
    commit_end: uint256 = self._field(info, I_DEADLINE, BLOCK_BITS)
    assert block.number > commit_end, "Duel: reveal window not open"
    assert block.number <= commit_end + REVEAL_WINDOW, "Duel: reveal window over"
    assert vote >= VOTE_A and vote <= VOTE_NO_EVIDENCE, "Duel: invalid vote"
    round: uint256 = self._field(info, I_ROUND, 2)
    panel: uint256 = self._panel_of(duel_id, info, round)
    mask: uint256 = self._seat_mask(panel, msg.sender)
    assert mask != 0, "Duel: not a judge of this duel"
    seat: uint256 = self._first_seat(mask)
    assert self._field(panel, P_VOTES + 3 * seat, 3) == 0, "Duel: already revealed"
    c: uint256 = (self.commitments[4 * (2 * duel_id + round - 1) + seat // 2] >> (128 * (seat % 2))) & LOW_128
    assert c != 0, "Duel: no commitment"
    h: uint256 = convert(keccak256(abi_encode(chain.id, self, duel_id, round, msg.sender, vote, salt)), uint256)
    assert h >> 128 == c, "Duel: reveal does not match commitment"
    for i: uint256 in range(MAX_SEATS):
        if mask & (1 << i) != 0:
            panel |= convert(vote, uint256) << (P_VOTES + 3 * i)
    if round == 1:
        self.duelInfo[duel_id] = self._with_panel(duel_id, info, 1, panel)
    else:
        self.duelPanel[duel_id] = panel
    log VoteRevealed(duelId=duel_id, judge=msg.sender, round=round, vote=vote)


@pure
@internal
def _tally(panel: uint256) -> (uint8, uint256, uint256, uint256):
    """@dev (outcome, seats for A, seats for B, seats that revealed) of one round's panel."""
    size: uint256 = (panel >> P_SIZE) & 15
    n_a: uint256 = 0
    n_b: uint256 = 0
    n_no_ev: uint256 = 0
    n_revealed: uint256 = 0
    for i: uint256 in range(size, bound=MAX_SEATS):
        v: uint256 = (panel >> (P_VOTES + 3 * i)) & 7
        if v == 1:
            n_a += 1
        elif v == 2:
            n_b += 1
        elif v == 4:
            n_no_ev += 1
        if v != 0:
            n_revealed += 1
    outcome: uint8 = OUTCOME_TIE
    if n_no_ev * 2 > size:
        outcome = OUTCOME_VOIDED
    elif n_a > n_b:
        outcome = OUTCOME_A_WON
    elif n_b > n_a:
        outcome = OUTCOME_B_WON
    return (outcome, n_a, n_b, n_revealed)


@view
@external
def getVotes(duel_id: uint256, round: uint256) -> DynArray[uint8, MAX_SEATS]:
    """@notice Revealed votes of a round's seats, in seat order (0 = not revealed)."""
    panel: uint256 = self._panel_of(duel_id, self.duelInfo[duel_id], round)
    out: DynArray[uint8, MAX_SEATS] = []
    for i: uint256 in range(self._field(panel, P_SIZE, 4), bound=MAX_SEATS):
        out.append(convert(self._field(panel, P_VOTES + 3 * i, 3), uint8))
    return out


@view
@external
def getJudges(duel_id: uint256, round: uint256) -> DynArray[address, MAX_SEATS]:
    """@notice The seats of a round (a judge drawn twice appears twice), empty if not drawn."""
    info: uint256 = self.duelInfo[duel_id]
    return self._seats(info, self._panel_of(duel_id, info, round))


@external
def appeal(duel_id: uint256):
    """
    @notice The duelist that lost the first round may appeal within APPEAL_WINDOW blocks after its
            reveals, paying APPEAL_FEE from its credit: a second panel of 2K+1 seats is drawn at the
            next epoch's first block, and its verdict is final. The fee pays that panel's coherent
            seats; it comes back (from the reserve) if the appeal overturns the first verdict.
    """
    self._home()
    info: uint256 = self.duelInfo[duel_id]
    assert self._status(info) == DUEL_JUDGING and self._field(info, I_ROUND, 2) == 1, "Duel: not appealable"
    reveal_end: uint256 = self._field(info, I_DEADLINE, BLOCK_BITS) + REVEAL_WINDOW
    assert block.number > reveal_end, "Duel: reveal window not over"
    assert block.number <= reveal_end + APPEAL_WINDOW, "Duel: appeal window over"
    outcome: uint8 = OUTCOME_TIE
    n_a: uint256 = 0
    n_b: uint256 = 0
    n_rev: uint256 = 0
    outcome, n_a, n_b, n_rev = self._tally(self._panel_of(duel_id, info, 1))
    loser: uint256 = self._field(info, I_B, LEAF_BITS)
    if outcome == OUTCOME_B_WON:
        loser = self._field(info, I_A, LEAF_BITS)
    else:
        assert outcome == OUTCOME_A_WON, "Duel: no verdict to appeal"
    assert self._party(info, loser) == msg.sender, "Duel: only the losing duelist appeals"
    assert self.credit[msg.sender] >= APPEAL_FEE, "Bank: insufficient credit"
    self.credit[msg.sender] -= APPEAL_FEE
    seed_block: uint256 = self._next_epoch_start(block.number, EPOCH_BLOCKS)
    commit_end: uint256 = seed_block + COMMIT_WINDOW
    info = self._with(info, I_ROUND, 2, 2)
    info = self._with(info, I_SEED, BLOCK_BITS, seed_block)
    self.duelInfo[duel_id] = self._with(info, I_DEADLINE, BLOCK_BITS, commit_end)
    log DuelAppealed(duelId=duel_id, appellant=msg.sender, deposit=APPEAL_FEE, seedBlock=seed_block, commitEnd=commit_end)


# ---------------------------------------------------------------------------------------------
# duels: settlement
@view
@internal
def _weight(final: uint8) -> (uint256, uint256):
    """@dev (numerator, denominator) of the pay scale of a seat coherent with `final`: 1 / (2 p), p the
            smoothed share of past decided verdicts that went the same way, within [1/4, 4]; 1 for a
            tie or a void."""
    if final != OUTCOME_A_WON and final != OUTCOME_B_WON:
        return (1, 1)
    counts: uint256 = self.verdicts
    same: uint256 = counts & LOW_128
    if final == OUTCOME_B_WON:
        same = counts >> 128
    num: uint256 = (counts & LOW_128) + (counts >> 128) + 2
    den: uint256 = 2 * (same + 1)
    if num > MAX_WEIGHT * den:
        return (MAX_WEIGHT, 1)
    if num * MAX_WEIGHT < den:
        return (1, MAX_WEIGHT)
    return (num, den)


@internal
def _count_verdict(final: uint8):
    if final != OUTCOME_A_WON and final != OUTCOME_B_WON:
        return
    counts: uint256 = self.verdicts
    won_a: uint256 = counts & LOW_128
    won_b: uint256 = counts >> 128
    if final == OUTCOME_A_WON:
        won_a += 1
    else:
        won_b += 1
    if won_a + won_b >= VERDICT_DECAY_AT:
        won_a //= 2
        won_b //= 2
    self.verdicts = won_a | (won_b << 128)


@internal
def _judge_round(
    duel_id: uint256, info: uint256, panel: uint256, final_panel: uint256, final: uint8, n_a: uint256, n_b: uint256,
    budget: uint256, scales: uint256[4]
) -> (uint256, uint256):
    """
    @dev Pay and penalise one round's seats, each against the final round's verdict recounted
         without that judge's own seats (leave-one-out: a seat is never paid for agreeing with a
         verdict its own vote made). A seat that voted for the side its recount favours (when the
         recount is even: for either side) gets JUDGE_FEE plus RESERVE_PAYOUT_BPS of the reserve; one
         that voted for the other side pays JUDGE_PENALTY into the reserve; both scaled by the pay
         scale of the recount's verdict (`scales`: A's then B's (num, den) from `_weight`; 1 for an
         even recount), the fee from `budget` first and from the reserve for what the budget lacks.
         A silent seat pays SILENT_PENALTY; abstaining and no-evidence seats get and pay nothing. A
         void final verdict pays no seat. Returns (fees paid from `budget`, the reserve after this
         round); the caller stores the reserve.
    """
    size: uint256 = self._field(panel, P_SIZE, 4)
    final_size: uint256 = self._field(final_panel, P_SIZE, 4)
    reserve: uint256 = self.reserve
    bonus: uint256 = reserve * RESERVE_PAYOUT_BPS // BPS
    paid: uint256 = 0
    for i: uint256 in range(size, bound=MAX_SEATS):
        v: uint256 = (panel >> (P_VOTES + 3 * i)) & 7
        leaf: uint256 = (panel >> (i * LEAF_BITS)) & ((1 << LEAF_BITS) - 1)
        judge: address = self._party(info, leaf)
        ref: uint256 = 0  # the recount's winner: 1 A, 2 B, 3 even, 0 none (a void)
        if final != OUTCOME_VOIDED:
            a: uint256 = n_a
            b: uint256 = n_b
            for j: uint256 in range(final_size, bound=MAX_SEATS):
                if (final_panel >> (j * LEAF_BITS)) & ((1 << LEAF_BITS) - 1) == leaf:
                    w: uint256 = (final_panel >> (P_VOTES + 3 * j)) & 7
                    if w == 1:
                        a -= 1
                    elif w == 2:
                        b -= 1
            ref = 3
            if a > b:
                ref = 1
            elif b > a:
                ref = 2
        num: uint256 = 1
        den: uint256 = 1
        if ref == 1 or ref == 2:
            num = scales[2 * ref - 2]
            den = scales[2 * ref - 1]
        if (v == 1 or v == 2) and (v == ref or ref == 3):
            fee: uint256 = JUDGE_FEE * num // den
            from_budget: uint256 = min(fee, budget - paid)
            from_reserve: uint256 = min(fee - from_budget + bonus * num // den, reserve)
            paid += from_budget
            reserve -= from_reserve
            self._pay(duel_id, judge, from_budget + from_reserve, REWARD_JUDGE_FEE)
        elif v == 0 or ((v == 1 or v == 2) and (ref == 1 or ref == 2)):
            cut: uint256 = SILENT_PENALTY
            reason: uint8 = SLASH_SILENT_JUDGE
            if v != 0:
                cut = JUDGE_PENALTY * num // den
                reason = SLASH_INCOHERENT_JUDGE
            cut = self._take_stake(judge, cut, 0)
            if cut > 0:
                reserve += cut
                log StakeSlashed(duelId=duel_id, node=judge, amount=cut, reason=reason)
    return (paid, reserve)


@internal
def _settle_verdict(duel_id: uint256, info: uint256):
    """@dev Apply the final verdict of a judged duel (see `settleDuel`)."""
    round: uint256 = self._field(info, I_ROUND, 2)
    panel1: uint256 = self._panel_of(duel_id, info, 1)
    panel2: uint256 = 0
    if round == 2:
        panel2 = self.duelPanel[duel_id]
    out1: uint8 = OUTCOME_TIE
    n_a: uint256 = 0
    n_b: uint256 = 0
    n_r: uint256 = 0
    out1, n_a, n_b, n_r = self._tally(panel1)
    final: uint8 = out1
    final_round: uint256 = 1
    if panel2 != 0:
        final, n_a, n_b, n_r = self._tally(panel2)
        final_round = 2
    a: address = self._party(info, self._field(info, I_A, LEAF_BITS))
    b: address = self._party(info, self._field(info, I_B, LEAF_BITS))
    reserve_before: uint256 = self.reserve

    # the duelists: a winning challenger takes A's bond; a winning A takes nothing (the origin chose
    # it, so it must not profit from a duel): B's bond goes to the reserve
    bond: uint256 = self._duel_bond(info, DUEL_BOND)
    a_loses: uint256 = 0
    b_loses: uint256 = 0
    if final == OUTCOME_B_WON:
        a_loses = bond
    elif final == OUTCOME_A_WON:
        b_loses = bond
    moved: uint256 = self._take_stake(a, a_loses, bond) + self._take_stake(b, b_loses, bond)
    self.duelInfo[duel_id] = self._with(self._with(info, I_STATUS, 4, DUEL_SETTLED), I_OUTCOME, 4, convert(final, uint256))
    if moved > 0:
        if final == OUTCOME_B_WON:
            log StakeSlashed(duelId=duel_id, node=a, amount=moved, reason=SLASH_LOST_DUEL)
            self._pay(duel_id, b, moved + DUELIST_FEE, REWARD_STAKE_WON)
        else:
            log StakeSlashed(duelId=duel_id, node=b, amount=moved, reason=SLASH_LOST_DUEL)
            self._pay(duel_id, b, DUELIST_FEE, REWARD_DUELIST_FEE)
            self.reserve = reserve_before + moved
    else:
        self._pay(duel_id, b, DUELIST_FEE, REWARD_DUELIST_FEE)

    # the judges of every round, each against the final verdict recounted without its own seats,
    # paid (and penalised) by how rare a verdict like that is
    scales: uint256[4] = empty(uint256[4])
    a_num: uint256 = 0
    a_den: uint256 = 0
    b_num: uint256 = 0
    b_den: uint256 = 0
    a_num, a_den = self._weight(OUTCOME_A_WON)
    b_num, b_den = self._weight(OUTCOME_B_WON)
    scales = [a_num, a_den, b_num, b_den]
    self._count_verdict(final)
    final_panel: uint256 = panel1
    if panel2 != 0:
        final_panel = panel2
    paid1: uint256 = 0
    reserve: uint256 = 0
    paid1, reserve = self._judge_round(duel_id, info, panel1, final_panel, final, n_a, n_b, K_JUDGES * JUDGE_FEE, scales)
    self.reserve = reserve
    if paid1 < K_JUDGES * JUDGE_FEE:
        self._pay(duel_id, self._party(info, self._field(info, I_ORIGIN, LEAF_BITS)), K_JUDGES * JUDGE_FEE - paid1, REWARD_ESCROW_REFUND)
    if round == 2:
        appellant: address = b
        if out1 == OUTCOME_B_WON:
            appellant = a
        if panel2 == 0:
            # nobody drew the appeal panel: the first verdict stands and the deposit goes back
            self._pay(duel_id, appellant, APPEAL_FEE, REWARD_APPEAL_REFUND)
        else:
            paid2: uint256 = 0
            paid2, reserve = self._judge_round(duel_id, info, panel2, panel2, final, n_a, n_b, APPEAL_FEE, scales)
            if (appellant == a and final == OUTCOME_A_WON) or (appellant == b and final == OUTCOME_B_WON):
                # the overturned first verdict paid into the reserve; it pays the appeal panel back
                covered: uint256 = min(paid2, reserve)
                reserve -= covered
                self._pay(duel_id, appellant, APPEAL_FEE - paid2 + covered, REWARD_APPEAL_REFUND)
            else:
                reserve += APPEAL_FEE - paid2
            self.reserve = reserve
    if self.reserve != reserve_before:
        log ReserveChanged(duelId=duel_id, amount=self.reserve)
    log DuelSettled(duelId=duel_id, outcome=final, round=final_round, votesA=n_a, votesB=n_b, stakeMoved=moved)


@external
def settleDuel(duel_id: uint256):
    """
    @notice End a duel once nothing can change it any more; anyone may call it, and it succeeds once.
            - Judged: after the appeal window of the first round (or after the appeal round's
              reveals, or once every seat of it revealed): the final round's seat majority wins
              (a majority of no-evidence seats voids it; equal seats tie). A winning challenger
              takes A's bond; a winning A takes nothing, and B's bond goes to the reserve. Seats
              that voted with the verdict get JUDGE_FEE and a share of the reserve, scaled up when
              verdicts like this one are rare and down when they are common (1 / (2p), within
              [1/4, 4]: a judge that always votes for the usual winner earns less than one that
              reads the answers); seats that voted against it pay JUDGE_PENALTY, silent seats
              SILENT_PENALTY, into the reserve.
              B gets DUELIST_FEE; the origin gets back the judge fees nobody earned.
            - Not answered in time: the challenger pays its bond into the reserve (recorded, or
              drawn now if this is still the seed block's epoch, whose stake the draw needs); the
              origin gets its escrow back.
            - Request never published after B said it could not get it: B gets DUELIST_FEE and the
              rest of the escrow goes to the reserve.
    """
    info: uint256 = self.duelInfo[duel_id]
    status: uint256 = self._status(info)
    deadline: uint256 = self._field(info, I_DEADLINE, BLOCK_BITS)
    if status == DUEL_AWAITING_ANSWER:
        assert block.number > deadline, "Duel: answer window not over"
        reason: uint8 = CANCEL_NO_CHALLENGER
        b_leaf: uint256 = self._field(info, I_B, LEAF_BITS)
        found: bool = self._field(info, I_B_DRAWN, 1) == 1
        bonded: bool = found
        seed_block: uint256 = self._field(info, I_SEED, BLOCK_BITS)
        if not found and block.number // EPOCH_BLOCKS == seed_block // EPOCH_BLOCKS:
            # nobody recorded the challenger, but its draw still stands: it does not escape
            found, b_leaf = self._challenger_leaf(duel_id, info)
        if found:
            reason = CANCEL_NO_ANSWER
            b: address = self._party(info, b_leaf)
            bond: uint256 = self._duel_bond(info, DUEL_BOND)  # _cancel releases a recorded bond
            if not bonded:
                # the bond it would have had if recorded now: never stake that other duels bond
                bond = self._duel_bond(min(BOND_UNITS, self._free_stake(b) * BOND_UNITS // DUEL_BOND) << I_BOND
                                       | 1 << I_B_DRAWN, DUEL_BOND)
            cut: uint256 = self._take_stake(b, bond, 0)
            if cut > 0:
                log StakeSlashed(duelId=duel_id, node=b, amount=cut, reason=SLASH_NO_ANSWER)
                self.reserve += cut
                log ReserveChanged(duelId=duel_id, amount=self.reserve)
            if not bonded:
                info = self._with(info, I_B, LEAF_BITS, b_leaf)
        self._cancel(duel_id, info, reason)
        self._pay(duel_id, self._party(info, self._field(info, I_ORIGIN, LEAF_BITS)), DUEL_ESCROW, REWARD_ESCROW_REFUND)
        return
    if status == DUEL_AWAITING_REQUEST:
        assert block.number > deadline, "Duel: publish window not over"
        self._cancel(duel_id, info, CANCEL_REQUEST_WITHHELD)
        self._pay(duel_id, self._party(info, self._field(info, I_B, LEAF_BITS)), DUELIST_FEE, REWARD_DUELIST_FEE)
        self.reserve += DUEL_ESCROW - DUELIST_FEE
        log ReserveChanged(duelId=duel_id, amount=self.reserve)
        return
    assert status == DUEL_JUDGING, "Duel: not open"
    round: uint256 = self._field(info, I_ROUND, 2)
    panel: uint256 = self._panel_of(duel_id, info, round)
    if panel == 0:
        # nobody drew the appeal panel in its commit window: the first verdict stands
        assert block.number > deadline, "Duel: commit window not over"
        self._settle_verdict(duel_id, info)
        return
    reveal_end: uint256 = deadline + REVEAL_WINDOW
    if round == 1:
        assert block.number > reveal_end + APPEAL_WINDOW, "Duel: appeal window not over"
    else:
        o: uint8 = OUTCOME_TIE
        x: uint256 = 0
        y: uint256 = 0
        n_rev: uint256 = 0
        o, x, y, n_rev = self._tally(panel)
        assert block.number > reveal_end or n_rev == self._field(panel, P_SIZE, 4), "Duel: reveal window not over"
    self._settle_verdict(duel_id, info)


# ---------------------------------------------------------------------------------------------
# duels: views
@view
@external
def getDuel(duel_id: uint256) -> (address, address, address, uint256, uint256, uint256, uint256, uint8, uint256):
    """
    @notice (origin, a, b, seedBlock, deadline, bond, round, status, outcome). b is the zero address
            until drawn. The deadline is the answer deadline, the publish deadline or the current
            round's commit end, by status (1 awaiting answer, 2 awaiting request, 3 judging,
            4 settled, 5 cancelled). The bond is each duelist's (DUEL_BOND, or less once B is drawn if
            B's free stake was less). Hashes live in the events only.
    """
    info: uint256 = self.duelInfo[duel_id]
    assert info != 0, "Duel: unknown duel"
    b: address = empty(address)
    if self._field(info, I_B_DRAWN, 1) == 1:
        b = self._party(info, self._field(info, I_B, LEAF_BITS))
    return (
        self._party(info, self._field(info, I_ORIGIN, LEAF_BITS)),
        self._party(info, self._field(info, I_A, LEAF_BITS)),
        b,
        self._field(info, I_SEED, BLOCK_BITS),
        self._field(info, I_DEADLINE, BLOCK_BITS),
        self._duel_bond(info, DUEL_BOND),
        self._field(info, I_ROUND, 2),
        convert(self._status(info), uint8),
        self._field(info, I_OUTCOME, 4),
    )
