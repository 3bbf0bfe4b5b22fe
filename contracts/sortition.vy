# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title Stake-weighted sortition over a fixed-depth sum tree
@notice Each registered node owns one leaf for life; the leaf holds the node's routable weight
        (its active stake when eligible, else 0). An internal node holds the sum of its two children,
        so the root is the total weight. Updates and draws walk one path: nothing loops over nodes.
        Draws are without replacement and can exclude a few leaves (the origin and the duelists of a
        duel): excluded weight is subtracted on the way down, so no rejection loop is needed.
        Leaves are handed out left to right, so all weight sits in the leftmost subtree that holds
        the allocated leaves (its root is at level `topLevel`). Only that subtree and the root are
        kept up to date, and draws start at its root: every level above it would send the draw left
        anyway, so skipping them gives the same leaves while updates and draws cost O(log leafCount)
        instead of O(DEPTH).
"""

MAX_DEPTH: constant(uint256) = 20
# 3 excluded parties (origin, A, B) + up to MAX_DRAW drawn leaves.
MAX_DRAW: constant(uint256) = 8
MAX_EXCLUDED: constant(uint256) = MAX_DRAW + 3

DEPTH: public(immutable(uint256))
LEAVES: immutable(uint256)

# heap-indexed: root at 1, children of i at 2i and 2i+1, leaf i at LEAVES + i
tree: HashMap[uint256, uint256]
leafOwner: public(HashMap[uint256, address])
leafCount: public(uint256)
# level of the root of the leftmost subtree that covers every allocated leaf (DEPTH: just leaf 0)
topLevel: uint256


@deploy
def __init__(depth: uint256):
    assert depth >= 1 and depth <= MAX_DEPTH, "Sortition: depth out of range"
    DEPTH = depth
    LEAVES = 1 << depth
    self.topLevel = depth


@view
@external
def totalWeight() -> uint256:
    """@notice Sum of all leaf weights (total routable stake)."""
    return self.tree[1]


@view
@external
def leafWeight(leaf: uint256) -> uint256:
    return self.tree[LEAVES + leaf]


@internal
def _allocate(owner: address) -> uint256:
    """@dev Give `owner` the next free leaf. Leaves are never reused by another owner."""
    leaf: uint256 = self.leafCount
    assert leaf < LEAVES, "Sortition: tree full"
    self.leafCount = leaf + 1
    self.leafOwner[leaf] = owner
    top: uint256 = self.topLevel
    if leaf == 1 << (DEPTH - top):
        # the leaf falls outside the covered subtree: cover twice as many leaves; the new right
        # half is empty, so the new subtree root starts with the old one's sum
        self.tree[1 << (top - 1)] = self.tree[1 << top]
        self.topLevel = top - 1
    return leaf


@view
@internal
def _weight(leaf: uint256) -> uint256:
    return self.tree[LEAVES + leaf]


@internal
def _set(leaf: uint256, weight: uint256):
    """@dev Set a leaf's weight and fix the sums on its path to the covered subtree's root, and the root."""
    node: uint256 = LEAVES + leaf
    old: uint256 = self.tree[node]
    if old == weight:
        return
    top: uint256 = 1 << self.topLevel
    for _i: uint256 in range(MAX_DEPTH + 1):
        if weight > old:
            self.tree[node] += weight - old
        else:
            self.tree[node] -= old - weight
        if node == top:
            break
        node = node >> 1
    if top != 1:
        if weight > old:
            self.tree[1] += weight - old
        else:
            self.tree[1] -= old - weight


@view
@internal
def _draw(
    seed: bytes32, count: uint256, excluded: DynArray[uint256, MAX_EXCLUDED]
) -> DynArray[uint256, MAX_DRAW]:
    """
    @dev Draw up to `count` distinct leaves with probability proportional to weight, never one in
         `excluded` (leaf indices). Equivalent to sequential weighted sampling without replacement.
         Returns fewer than `count` leaves when the remaining weight runs out.
    """
    ex_nodes: DynArray[uint256, MAX_EXCLUDED] = []
    ex_weights: DynArray[uint256, MAX_EXCLUDED] = []
    total: uint256 = self.tree[1]
    for leaf: uint256 in excluded:
        node: uint256 = LEAVES + leaf
        if node in ex_nodes:
            continue
        w: uint256 = self.tree[node]
        ex_nodes.append(node)
        ex_weights.append(w)
        total -= w

    drawn: DynArray[uint256, MAX_DRAW] = []
    top_level: uint256 = self.topLevel
    for k: uint256 in range(MAX_DRAW):
        if k == count or total == 0:
            break
        r: uint256 = convert(keccak256(concat(seed, convert(k, bytes32))), uint256) % total
        # above the covered subtree all weight is on the left: start at its root
        node: uint256 = 1 << top_level
        for level: uint256 in range(top_level, top_level + MAX_DEPTH, bound=MAX_DEPTH):
            if level == DEPTH:
                break
            left: uint256 = node << 1
            down: uint256 = DEPTH - level - 1
            lw: uint256 = self.tree[left]
            for j: uint256 in range(len(ex_nodes), bound=MAX_EXCLUDED):
                if ex_nodes[j] >> down == left:
                    lw -= ex_weights[j]
            if r < lw:
                node = left
            else:
                r -= lw
                node = left + 1
        w: uint256 = self.tree[node]
        drawn.append(node - LEAVES)
        ex_nodes.append(node)
        ex_weights.append(w)
        total -= w
    return drawn
