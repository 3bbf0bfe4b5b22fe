# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title Stake-weighted sortition over a fixed-depth sum tree, with weights frozen per epoch
@notice Each registered node owns one leaf until it releases it; the leaf holds the node's routable weight
        (its active stake when eligible, else 0). An internal node holds the sum of its two children,
        so the root is the total weight. Updates and draws walk one path: nothing loops over nodes.

        Every tree word keeps two values and an epoch: `cur` (the live value), `prev` (the value at
        the end of the epoch before `epoch`) and `epoch` (the last epoch the word changed in). A draw
        made in epoch E reads the *frozen* value of each word: `cur` if it last changed before E,
        else `prev`, i.e. the tree exactly as it stood when epoch E began. So no transaction made
        during E (a stake, an unstake, a registration, a slash) changes who a draw in E picks: a
        draw's result depends only on its seed and on the tree at the epoch boundary, never on who
        calls it or when within the epoch. (Stake changes still enter the live tree at once; they
        count for draws from the next epoch on.)

        Leaves are handed out left to right, so all weight sits in the leftmost subtree that holds
        the allocated leaves (its root is at level `topLevel`). Only that subtree and the root are
        kept up to date, and draws start at its root: every level above it would send the draw left
        anyway, so skipping them gives the same leaves while updates and draws cost O(log leafCount)
        instead of O(DEPTH).

        A released leaf (its node left, withdrew its stake and took its registration bond back) waits
        in a first-in-first-out list and is handed to a later registration once the caller says it may
        be (`reuse_before`: the ledger waits until no duel can still name the old owner). Each leaf
        records the block its owner took it, so a settlement can tell an old owner from the new one.
"""

MAX_DEPTH: constant(uint256) = 20
# the most leaves one draw picks (judge seats of an appeal round: 2 * 3 + 1)
MAX_DRAW: constant(uint256) = 8
# parties a draw never picks: the origin and both duelists of a duel
MAX_EXCLUDED: constant(uint256) = 3

VALUE_BITS: constant(uint256) = 112
VALUE_MASK: constant(uint256) = (1 << 112) - 1
EPOCH_SHIFT: constant(uint256) = 224
LEAF_MASK: constant(uint256) = (1 << 32) - 1
ADDRESS_MASK: constant(uint256) = (1 << 160) - 1

DEPTH: public(immutable(uint256))
LEAVES: immutable(uint256)

# heap-indexed: root at 1, children of i at 2i and 2i+1, leaf i at LEAVES + i.
# word = cur (112 bits) | prev (112 bits) << 112 | epoch of the last change (32 bits) << 224
tree: HashMap[uint256, uint256]
# leaf -> owner (low 160 bits) | the block it took the leaf (from bit 160)
leafSlot: HashMap[uint256, uint256]
leafCount: public(uint256)  # leaves ever handed out (released ones included)
# released leaves, oldest first: leaf (low 32 bits) | the block it was released (from bit 32)
freeLeaves: HashMap[uint256, uint256]
freeHead: uint256
freeTail: uint256
# level of the root of the leftmost subtree that covers every allocated leaf (DEPTH: just leaf 0)
topLevel: uint256


@deploy
def __init__(depth: uint256):
    assert depth >= 1 and depth <= MAX_DEPTH, "Sortition: depth out of range"
    DEPTH = depth
    LEAVES = 1 << depth
    self.topLevel = depth


@pure
@internal
def _cur(word: uint256) -> uint256:
    return word & VALUE_MASK


@pure
@internal
def _frozen_value(word: uint256, epoch: uint256) -> uint256:
    """@dev The word's value as it stood when `epoch` began."""
    if (word >> EPOCH_SHIFT) < epoch:
        return word & VALUE_MASK
    return (word >> VALUE_BITS) & VALUE_MASK


@pure
@internal
def _bump(word: uint256, add: uint256, sub: uint256, epoch: uint256) -> uint256:
    """@dev The word with `add - sub` applied to its live value at `epoch`, keeping its frozen value."""
    cur: uint256 = word & VALUE_MASK
    prev: uint256 = (word >> VALUE_BITS) & VALUE_MASK
    if (word >> EPOCH_SHIFT) < epoch:
        prev = cur  # first change in this epoch: the live value so far is the frozen one
    cur = cur + add - sub
    assert cur <= VALUE_MASK, "Sortition: weight overflow"
    return cur | (prev << VALUE_BITS) | (epoch << EPOCH_SHIFT)


@view
@external
def totalWeight() -> uint256:
    """@notice Sum of all leaf weights now (total routable stake)."""
    return self.tree[1] & VALUE_MASK


@view
@external
def leafWeight(leaf: uint256) -> uint256:
    """@notice A leaf's weight now."""
    return self.tree[LEAVES + leaf] & VALUE_MASK


@internal
def _allocate(owner: address, reuse_before: uint256) -> uint256:
    """@dev Give `owner` the oldest released leaf if it was released before block `reuse_before`, else
            the next never-used one."""
    head: uint256 = self.freeHead
    if head < self.freeTail:
        entry: uint256 = self.freeLeaves[head]
        if entry >> 32 < reuse_before:
            self.freeHead = head + 1
            reused: uint256 = entry & LEAF_MASK
            self.leafSlot[reused] = convert(owner, uint256) | (block.number << 160)
            return reused
    leaf: uint256 = self.leafCount
    assert leaf < LEAVES, "Sortition: tree full"
    self.leafCount = leaf + 1
    self.leafSlot[leaf] = convert(owner, uint256) | (block.number << 160)
    top: uint256 = self.topLevel
    if leaf == 1 << (DEPTH - top):
        # the leaf falls outside the covered subtree: cover twice as many leaves; the new right
        # half is empty, so the new subtree root starts as a copy of the old one (values and epoch)
        self.tree[1 << (top - 1)] = self.tree[1 << top]
        self.topLevel = top - 1
    return leaf


@internal
def _release(leaf: uint256):
    """@dev Put a leaf on the free list (its owner stays on record until it is reused). Its weight is 0:
            only a node that left (weight 0 from then on) releases its leaf."""
    tail: uint256 = self.freeTail
    self.freeLeaves[tail] = leaf | (block.number << 32)
    self.freeTail = tail + 1


@view
@internal
def _owner(leaf: uint256) -> address:
    return convert(self.leafSlot[leaf] & ADDRESS_MASK, address)


@view
@external
def leafOwner(leaf: uint256) -> address:
    """@notice The node holding `leaf` (or that last held it, if it is released and not reused yet)."""
    return self._owner(leaf)


@view
@external
def leafSince(leaf: uint256) -> uint256:
    """@notice The block in which the leaf's current owner took it."""
    return self.leafSlot[leaf] >> 160


@view
@external
def freeLeafCount() -> uint256:
    """@notice Released leaves waiting for a new owner."""
    return self.freeTail - self.freeHead


@view
@internal
def _weight(leaf: uint256) -> uint256:
    return self.tree[LEAVES + leaf] & VALUE_MASK


@view
@internal
def _frozen(leaf: uint256, epoch: uint256) -> uint256:
    return self._frozen_value(self.tree[LEAVES + leaf], epoch)


@internal
def _set(leaf: uint256, weight: uint256, epoch: uint256):
    """@dev Set a leaf's live weight in `epoch` and fix the sums on its path to the covered subtree's
            root, and the root."""
    node: uint256 = LEAVES + leaf
    old: uint256 = self.tree[node] & VALUE_MASK
    if old == weight:
        return
    add: uint256 = 0
    sub: uint256 = 0
    if weight > old:
        add = weight - old
    else:
        sub = old - weight
    top: uint256 = 1 << self.topLevel
    for _i: uint256 in range(MAX_DEPTH + 1):
        self.tree[node] = self._bump(self.tree[node], add, sub, epoch)
        if node == top:
            break
        node = node >> 1
    if top != 1:
        self.tree[1] = self._bump(self.tree[1], add, sub, epoch)


@view
@internal
def _draw(
    seed: bytes32, count: uint256, excluded: DynArray[uint256, MAX_EXCLUDED], epoch: uint256
) -> DynArray[uint256, MAX_DRAW]:
    """
    @dev Draw `count` leaves independently (with replacement) with probability proportional to
         their weight frozen at the start of `epoch`, never one in `excluded` (leaf indices). Draw
         k walks down from the covered subtree's root with keccak256(seed, k) modulo the eligible
         total; the excluded weight is subtracted on the way down, so no rejection loop is needed.
         Returns an empty list when no eligible weight is left.
    """
    ex_nodes: DynArray[uint256, MAX_EXCLUDED] = []
    ex_weights: DynArray[uint256, MAX_EXCLUDED] = []
    total: uint256 = self._frozen_value(self.tree[1], epoch)
    for leaf: uint256 in excluded:
        node: uint256 = LEAVES + leaf
        if node in ex_nodes:
            continue
        w: uint256 = self._frozen_value(self.tree[node], epoch)
        ex_nodes.append(node)
        ex_weights.append(w)
        total -= w

    drawn: DynArray[uint256, MAX_DRAW] = []
    if total == 0:
        return drawn
    top_level: uint256 = self.topLevel
    for k: uint256 in range(MAX_DRAW):
        if k == count:
            break
        r: uint256 = convert(keccak256(concat(seed, convert(k, bytes32))), uint256) % total
        # above the covered subtree all weight is on the left: start at its root
        node: uint256 = 1 << top_level
        for level: uint256 in range(top_level, top_level + MAX_DEPTH, bound=MAX_DEPTH):
            if level == DEPTH:
                break
            left: uint256 = node << 1
            down: uint256 = DEPTH - level - 1
            lw: uint256 = self._frozen_value(self.tree[left], epoch)
            for j: uint256 in range(len(ex_nodes), bound=MAX_EXCLUDED):
                if ex_nodes[j] >> down == left:
                    lw -= ex_weights[j]
            if r < lw:
                node = left
            else:
                r -= lw
                node = left + 1
        drawn.append(node - LEAVES)
    return drawn
