"""PoS routing: stake-proportional draws without replacement, exclusion rules, determinism, audit."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from decimal import Decimal, localcontext

import pytest

from wwwserve.node import routing
from wwwserve.node.routing import (
    Peer,
    RoutingInputError,
    audit_delegation,
    audit_selection,
    candidates_for_delegation,
    pos_sample,
    selection_seed,
    uniform_for,
)

ETH = 10**18
BLOCK = bytes.fromhex("ab" * 32)
N_DRAWS = 20_000


def addr(i: int) -> str:
    return "0x" + f"{i + 1:040x}"


def make_peers(stakes: list[int], models: frozenset[str] = frozenset({"m"})) -> list[Peer]:
    return [Peer(addr(i), s, models, f"http://10.0.0.{i}:8000") for i, s in enumerate(stakes)]


def seeds(n: int, block: bytes = BLOCK) -> list[bytes]:
    return [selection_seed(f"req-{i}", block, 0) for i in range(n)]


@pytest.fixture(scope="module")
def pair_draws() -> list[tuple[str, str]]:
    """First two picks of N_DRAWS selections over stakes [1, 2, 3, 4] ETH (shared by the statistics tests)."""
    peers = make_peers([1 * ETH, 2 * ETH, 3 * ETH, 4 * ETH])
    draws = []
    for seed in seeds(N_DRAWS):
        picked = pos_sample(peers, 2, seed)
        draws.append((picked[0].address, picked[1].address))
    return draws


# --- statistics --------------------------------------------------------------------------------------


def test_first_pick_frequency_is_stake_proportional(pair_draws: list[tuple[str, str]]) -> None:
    stakes = [1, 2, 3, 4]
    total = sum(stakes)
    counts = Counter(first for first, _ in pair_draws)
    chi2 = 0.0
    for i, s in enumerate(stakes):
        p = s / total
        observed = counts[addr(i)]
        expected = N_DRAWS * p
        sigma = math.sqrt(N_DRAWS * p * (1 - p))
        assert abs(observed - expected) < 4 * sigma, (i, observed, expected)
        chi2 += (observed - expected) ** 2 / expected
    # chi-square, 3 degrees of freedom: P(chi2 > 16.27) = 0.001
    assert chi2 < 16.27


def test_ordered_pair_probabilities_match_without_replacement_formula(pair_draws: list[tuple[str, str]]) -> None:
    # P(first=i, second=j) = s_i/S * s_j/(S - s_i): successive stake-proportional draws without replacement.
    stakes = [1, 2, 3, 4]
    total = sum(stakes)
    counts = Counter(pair_draws)
    assert all(a != b for a, b in counts)
    chi2 = 0.0
    for i, j in itertools.permutations(range(4), 2):
        p = stakes[i] / total * stakes[j] / (total - stakes[i])
        observed = counts[(addr(i), addr(j))]
        expected = N_DRAWS * p
        sigma = math.sqrt(N_DRAWS * p * (1 - p))
        assert abs(observed - expected) < 4 * sigma, (i, j, observed, expected)
        chi2 += (observed - expected) ** 2 / expected
    # 12 cells, 11 degrees of freedom: P(chi2 > 31.26) = 0.001
    assert chi2 < 31.26
    # With replacement (the older reference code) would put mass on (i, i); the formula above sums to 1.
    assert math.isclose(
        sum(stakes[i] / total * stakes[j] / (total - stakes[i]) for i, j in itertools.permutations(range(4), 2)),
        1.0,
    )


def test_uniforms_are_in_open_interval_and_look_uniform() -> None:
    values = [uniform_for(seed, addr(0)) for seed in seeds(5_000)]
    assert all(0.0 < u < 1.0 for u in values)
    mean = sum(values) / len(values)
    # mean of U(0,1): 1/2, sd of the mean sqrt(1/12/n) ≈ 0.0041
    assert abs(mean - 0.5) < 4 * math.sqrt(1 / 12 / len(values))


def test_excluded_peer_mass_is_renormalised_over_the_rest() -> None:
    peers = make_peers([1 * ETH, 2 * ETH, 3 * ETH, 4 * ETH])
    n = 8_000
    counts = Counter(pos_sample(peers, 1, seed, exclude={addr(3)})[0].address for seed in seeds(n))
    assert counts[addr(3)] == 0
    for i, s in enumerate([1, 2, 3]):
        p = s / 6
        assert abs(counts[addr(i)] - n * p) < 4 * math.sqrt(n * p * (1 - p))


# --- shape and exclusion rules -----------------------------------------------------------------------


def test_returns_k_distinct_peers_in_key_order_and_all_when_k_exceeds_eligible() -> None:
    peers = make_peers([ETH] * 10)
    seed = selection_seed("r", BLOCK, 0)
    three = pos_sample(peers, 3, seed)
    assert len(three) == 3 and len({p.address for p in three}) == 3
    everyone = pos_sample(peers, 50, seed)
    assert len(everyone) == 10
    assert everyone[:3] == three  # a longer draw extends a shorter one: same key order
    assert pos_sample(peers, 0, seed) == []
    assert pos_sample([], 3, seed) == []


def test_zero_stake_is_never_selected() -> None:
    peers = make_peers([0, ETH, 0, 1])
    for seed in seeds(500):
        picked = pos_sample(peers, 4, seed)
        assert {p.address for p in picked} == {addr(1), addr(3)}


def test_model_filter_only_returns_peers_serving_it() -> None:
    peers = [
        Peer(addr(0), ETH, frozenset({"a"}), "e0"),
        Peer(addr(1), ETH, frozenset({"a", "b"}), "e1"),
        Peer(addr(2), ETH, frozenset({"b"}), "e2"),
    ]
    for seed in seeds(200):
        assert {p.address for p in pos_sample(peers, 3, seed, model="a")} == {addr(0), addr(1)}
        assert {p.address for p in pos_sample(peers, 3, seed, model="b")} == {addr(1), addr(2)}
        assert pos_sample(peers, 3, seed, model="c") == []
        assert len(pos_sample(peers, 3, seed)) == 3


def test_exclusion_is_case_insensitive() -> None:
    peers = [Peer("0xAbCdEf0000000000000000000000000000000001", ETH, frozenset({"m"}), "e")]
    seed = selection_seed("r", BLOCK, 0)
    assert pos_sample(peers, 1, seed, exclude={"0xabcdef0000000000000000000000000000000001"}) == []
    # ...and the checksummed and lower-case spellings draw the same U.
    assert uniform_for(seed, peers[0].address) == uniform_for(seed, peers[0].address.lower())


def test_delegation_candidates_are_k_plus_two_excluding_self_and_route() -> None:
    peers = make_peers([ETH] * 10)
    me, route = addr(0), [addr(1), addr(2)]
    for seed in seeds(300):
        cands = candidates_for_delegation(peers, me, route, seed)
        assert len(cands) == 3
        assert not {p.address for p in cands} & {me, *route}
        assert len(candidates_for_delegation(peers, me, route, seed, k_exec=3)) == 5


def test_multi_hop_routes_never_cycle_and_run_out_cleanly() -> None:
    peers = make_peers([(i + 1) * ETH for i in range(7)])
    for r in range(50):
        route = [addr(r % 7)]
        while True:
            hop = len(route) - 1
            cands = candidates_for_delegation(peers, route[-1], route, selection_seed(f"req-{r}", BLOCK, hop))
            if not cands:
                break
            assert cands[0].address not in route
            route.append(cands[0].address)
        assert len(route) == 7 and len(set(route)) == 7


# --- determinism and seeds ---------------------------------------------------------------------------


def test_same_seed_same_list_regardless_of_peer_order() -> None:
    peers = make_peers([(i % 5 + 1) * ETH for i in range(20)])
    seed = selection_seed("req-1", BLOCK, 0)
    first = pos_sample(peers, 5, seed)
    assert pos_sample(peers, 5, seed) == first
    assert pos_sample(list(reversed(peers)), 5, seed) == first
    assert pos_sample(iter(peers), 5, seed) == first


def test_different_request_ids_give_different_lists() -> None:
    peers = make_peers([(i % 5 + 1) * ETH for i in range(20)])
    lists = {tuple(p.address for p in pos_sample(peers, 5, seed)) for seed in seeds(200)}
    # 20*19*18*17*16 ordered 5-lists; 200 draws collide rarely, never most of the time.
    assert len(lists) >= 195
    a = pos_sample(peers, 5, selection_seed("req-a", BLOCK, 0))
    b = pos_sample(peers, 5, selection_seed("req-b", BLOCK, 0))
    assert a != b


def test_selection_seed_binds_every_field_injectively() -> None:
    base = selection_seed("req", BLOCK, 0)
    assert len(base) == 32
    assert selection_seed("req", BLOCK, 0) == base
    variants = {
        selection_seed("req2", BLOCK, 0),
        selection_seed("req", bytes(32), 0),
        selection_seed("req", BLOCK, 1),
        # length prefixes: moving bytes between fields changes the seed
        selection_seed("req" + "\xab", BLOCK[1:], 0),
    }
    assert base not in variants and len(variants) == 4


@pytest.mark.parametrize(
    ("request_id", "block_hash", "hop"),
    [("", BLOCK, 0), ("r", "ab", 0), ("r", BLOCK, -1), ("r", BLOCK, True), ("r", BLOCK, 2**64)],
)
def test_selection_seed_rejects_bad_input(request_id: str, block_hash: bytes, hop: int) -> None:
    with pytest.raises(RoutingInputError):
        selection_seed(request_id, block_hash, hop)


def test_bad_arguments_are_rejected() -> None:
    peers = make_peers([ETH, ETH])
    seed = selection_seed("r", BLOCK, 0)
    with pytest.raises(RoutingInputError):
        pos_sample(peers, -1, seed)
    with pytest.raises(RoutingInputError):
        pos_sample(peers, 1, b"")
    with pytest.raises(RoutingInputError, match="twice"):
        pos_sample([*peers, Peer(addr(0).upper().replace("0X", "0x"), ETH, frozenset(), "e")], 1, seed)
    with pytest.raises(RoutingInputError):
        candidates_for_delegation(peers, addr(0), [], seed, k_exec=0)
    with pytest.raises(RoutingInputError, match="one string"):
        pos_sample(peers, 1, seed, exclude=addr(0))
    with pytest.raises(RoutingInputError, match="one string"):
        candidates_for_delegation(peers, addr(0), addr(1), seed)
    with pytest.raises(RoutingInputError):
        Peer(addr(0), -1, frozenset(), "e")
    with pytest.raises(RoutingInputError):
        Peer("", 1, frozenset(), "e")
    assert Peer(addr(0), 1, {"m"}, "e").models == frozenset({"m"})  # type: ignore[arg-type]


# --- precision with huge stakes ----------------------------------------------------------------------


def exact_order(peers: list[Peer], seed: bytes) -> list[str]:
    """Oracle: keys -ln(U)/s in 80-digit decimal arithmetic, smallest first."""
    with localcontext() as ctx:
        ctx.prec = 80

        def key(p: Peer) -> Decimal:
            u = Decimal(uniform_for(seed, p.address))  # the float is exact: (2x+1)/2**53
            return -u.ln() / Decimal(p.stake_wei)

        return [p.address for p in sorted(peers, key=key)]


def test_order_matches_exact_arithmetic_for_stakes_from_one_wei_to_uint256() -> None:
    stakes = [1, 10**9, 10**18, 10**30, 10**30 + 1, 3 * 10**30, 2**200, 2**256 - 1]
    peers = make_peers(stakes)
    for seed in seeds(300):
        assert [p.address for p in pos_sample(peers, len(peers), seed)] == exact_order(peers, seed)


def test_scaling_all_stakes_keeps_the_distribution() -> None:
    # Only stake ratios matter: [1,2,3,4] wei and [1,2,3,4] * 1e30 wei draw the same lists.
    small = make_peers([1, 2, 3, 4])
    huge = make_peers([s * 10**30 for s in (1, 2, 3, 4)])
    for seed in seeds(2_000):
        assert [p.address for p in pos_sample(small, 4, seed)] == [p.address for p in pos_sample(huge, 4, seed)]


def test_near_equal_huge_stakes_still_follow_the_uniforms() -> None:
    # 1e30 and 1e30+1 wei differ by 1e-30 relatively: the order is decided by U alone (larger U first).
    peers = make_peers([10**30, 10**30 + 1])
    for seed in seeds(500):
        u = {p.address: uniform_for(seed, p.address) for p in peers}
        order = [p.address for p in pos_sample(peers, 2, seed)]
        assert order == sorted(u, key=lambda a: -u[a])


def test_ties_in_float_are_settled_exactly_then_by_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force every peer to draw the same U: keys then differ only through the stakes.
    monkeypatch.setattr(routing, "_uniform_numerator", lambda seed, address: 2**52 + 1)
    seed = selection_seed("r", BLOCK, 0)
    # 1e30 and 1e30+1 wei have equal float log-keys; the decimal re-rank still puts the larger stake first.
    peers = make_peers([10**30, 10**30 + 1, 10**30 + 2])
    assert [p.address for p in pos_sample(peers, 3, seed)] == [addr(2), addr(1), addr(0)]
    # Identical stakes and identical U: a true tie, broken by the (lower-case) address, whatever the input order.
    same = [Peer("0xB" + "0" * 39, ETH, frozenset(), "e"), Peer("0xa" + "0" * 39, ETH, frozenset(), "e")]
    assert [p.address for p in pos_sample(same, 2, seed)] == ["0xa" + "0" * 39, "0xB" + "0" * 39]
    assert pos_sample(list(reversed(same)), 2, seed) == pos_sample(same, 2, seed)


# --- audit -------------------------------------------------------------------------------------------


def test_audit_accepts_the_honest_list_and_rejects_tampering() -> None:
    peers = make_peers([(i + 1) * ETH for i in range(8)])
    seed = selection_seed("req-audit", BLOCK, 0)
    honest = pos_sample(peers, 3, seed, exclude={addr(0)})
    assert audit_selection(honest, peers, 3, seed, exclude={addr(0)})
    assert audit_selection([p.address.upper().replace("0X", "0x") for p in honest], peers, 3, seed, exclude={addr(0)})
    outsider = next(p for p in peers if p not in honest and p.address != addr(0))
    tampered = [
        [honest[1], honest[0], honest[2]],  # reordered
        honest[:2],  # truncated
        [*honest, outsider],  # padded
        [outsider, honest[1], honest[2]],  # substituted
    ]
    for claimed in tampered:
        assert not audit_selection(claimed, peers, 3, seed, exclude={addr(0)})
    # a different seed (e.g. a ground block hash) does not reproduce the list
    assert not audit_selection(honest, peers, 3, selection_seed("req-audit", bytes(32), 0), exclude={addr(0)})


def test_audit_delegation_recomputes_candidates() -> None:
    peers = make_peers([(i + 1) * ETH for i in range(8)])
    me, route = addr(7), [addr(6)]
    seed = selection_seed("req", BLOCK, 1)
    cands = candidates_for_delegation(peers, me, route, seed)
    assert audit_delegation(cands, peers, me, route, seed)
    # A delegator that quietly skipped the highest-stake candidate is caught.
    assert not audit_delegation(cands[1:] + [p for p in peers if p not in cands][:1], peers, me, route, seed)
    # Changing a stake after the fact changes the expected list for most seeds.
    shifted = [Peer(p.address, p.stake_wei * (100 if i == 0 else 1), p.models, p.endpoint) for i, p in enumerate(peers)]
    mismatches = 0
    for s in seeds(50):
        honest = candidates_for_delegation(peers, me, route, s)
        mismatches += not audit_delegation(honest, shifted, me, route, s)
    assert mismatches > 10


# --- the stake index (O(log N) selection for large networks) --------------------------------------------


def test_stake_index_draws_ordered_pairs_with_the_same_probabilities_as_pos_sample() -> None:
    from wwwserve.node.routing import StakeIndex

    stakes = [1, 2, 3, 4]
    index = StakeIndex.from_stakes({addr(i): s * ETH for i, s in enumerate(stakes)})
    assert index.total_wei == 10 * ETH and len(index) == 4
    counts = Counter(tuple(index.draw(seed, 2)) for seed in seeds(N_DRAWS))
    total = sum(stakes)
    for (i, a), (j, b) in itertools.permutations(enumerate(stakes), 2):
        # Successive sampling without replacement, exactly what pos_sample's keys give.
        p = a / total * b / (total - a)
        observed, expected = counts[(addr(i), addr(j))], N_DRAWS * p
        assert abs(observed - expected) < 4 * math.sqrt(N_DRAWS * p * (1 - p)), (i, j, observed, expected)


def test_stake_index_updates_excludes_and_replays() -> None:
    from wwwserve.node.routing import StakeIndex

    index = StakeIndex.from_stakes({addr(i): ETH for i in range(6)})
    seed = seeds(1)[0]
    assert index.draw(seed, 3) == index.draw(seed, 3)  # deterministic; the draw leaves the index as it was
    assert index.total_wei == 6 * ETH
    index.set(addr(2), 0)  # no longer routable
    index.set(addr(9).upper().replace("0X", "0x"), 5 * ETH)  # a new peer, any spelling of its address
    assert index.stake_of(addr(9)) == 5 * ETH and index.total_wei == 10 * ETH
    for s in seeds(300):
        picked = index.candidates_for_delegation(addr(0), [addr(1)], s, k_exec=1)
        assert len(picked) == 3 == len(set(picked))
        assert not {addr(0), addr(1), addr(2)} & set(picked)
    assert sorted(index.draw(seed, 10)) == sorted([addr(i) for i in (0, 1, 3, 4, 5, 9)])  # all, then no more
    assert index.draw(seed, 0) == [] and StakeIndex().draw(seed, 3) == []
    with pytest.raises(RoutingInputError):
        index.set(addr(1), -1)
    with pytest.raises(RoutingInputError):
        index.draw(b"", 1)
    with pytest.raises(RoutingInputError):
        index.candidates_for_delegation(addr(0), [], seed, k_exec=0)
