"""The explorer in a real browser (headless Debian chromium), against a running network: anvil, the contract and
three real `wwwserve node run` processes with fake backends, the explorer opened at node 1's `/explorer/`.

The network is test_duel_net's first three nodes (tests/integration/duel_network.py starts it): node 1 delegates
every request and duels every delegated answer, node 2 (A) executes, node 3 (B, most of the stake) is the
challenger; every seat votes for the longer answer, B's, so A loses round 1, appeals, and loses again.

In order (one network for the module): the nodes view shows every node with exactly the stakes
`wwwserve stake show --all` prints; a user's request to node 1 appears in the requests view without a reload;
the duel it becomes is shown open, then settled with its outcome and votes, again without a reload; the page
works from the keyboard; with api/stream refused it polls; `wwwserve explorer` (no node) serves the same page
over its own index; every view passes the accessibility audit (browser_harness) in light and dark, and a
screenshot of each lands in artifacts/browser/. Any console error or uncaught exception on a page fails its
test (conftest.watched_page).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_harness import ARTIFACTS, WatchedPage, accessibility_problems
from duel_network import Network, start_network
from playwright.sync_api import Page, expect
from test_duel_net import BLOCK_S, COMMON, MODEL, PARAMS, SPECS

from wwwserve.devnet.ports import free_port
from wwwserve.ledger.client import DuelOutcome, DuelStatus, Vote
from wwwserve.ledger.units import format_wei, parse_amount

pytestmark = pytest.mark.browser

# What api/duels says for the contract's outcomes and votes (explorer/api.py; the page shows them as text).
OUTCOME = {DuelOutcome.A_WON: "a_won", DuelOutcome.B_WON: "b_won", DuelOutcome.TIE: "tie", DuelOutcome.VOIDED: "voided"}
OPEN = ("awaiting_answer", "awaiting_request", "judging")  # the statuses of an open duel
VOTE = {Vote.NONE: "", Vote.A: "a", Vote.B: "b", Vote.ABSTAIN: "abstain", Vote.NO_EVIDENCE: "no_evidence"}
UI_TIMEOUT_MS = 30_000  # how long a view may take to show what the chain already holds (indexer poll + SSE)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """Origin, A and B of test_duel_net, with its windows, block time and settings."""
    with start_network(tmp_path_factory.mktemp("explorer-net"), PARAMS, SPECS[:3], COMMON, BLOCK_S) as net:
        yield net


@pytest.fixture(scope="module")
def explorer(network: Network) -> str:
    """Node 1's explorer page, once its index is open and has read the chain (before that api/ answers 503)."""
    base = f"http://127.0.0.1:{network.ports[0]}/explorer/"
    network.wait("node 1's explorer to serve its index", lambda: serves_index(base, network), timeout_s=60)
    return base


def serves_index(base: str, network: Network) -> bool:
    """The explorer at `base` answers from an index that has read every node's registration."""
    try:
        resp = httpx.get(base + "api/totals", timeout=5)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.json()["nodes_registered"] == len(network.addresses)


@pytest.fixture(scope="module")
def flow() -> dict[str, Any]:
    """What one test leaves for the next (the request of the requests test becomes the duels test's duel)."""
    return {}


def open_view(page: Page, url: str, view: str) -> None:
    """Go to `url` and wait until the view `view` (main's data-view) has rendered."""
    page.goto(url)
    expect(page.locator(f'main[data-view="{view}"][aria-busy="false"]')).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(page.locator('[data-testid="error"]')).to_have_count(0)


def mark_document(page: Page) -> None:
    """Tag the loaded document: `same_document` later says no reload or navigation away happened since."""
    page.evaluate("window.__explorerTest = 'same document'")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__explorerTest === 'same document'"))


def cli_stakes() -> dict[str, str]:
    """Every node's active stake as `wwwserve stake show --all` prints it (the real CLI in its own process, on
    the chain the network's environment names), by lower-case address: {address: "1 ETH"}."""
    out = subprocess.run([sys.executable, "-m", "wwwserve.cli", "stake", "show", "--all"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "400"}, check=True).stdout
    lines = [[cell.strip() for cell in re.split("[│┃]", line)] for line in out.splitlines() if re.search("[│┃]", line)]
    header = next((cells for cells in lines if "node" in cells and "stake" in cells), None)
    assert header is not None, out
    node, stake = header.index("node"), header.index("stake")
    stakes = {cells[node].lower(): cells[stake] for cells in lines if cells[node].startswith("0x")}
    assert stakes, out
    return stakes


def test_the_nodes_view_shows_every_node_with_the_stakes_the_cli_prints(network: Network, explorer: str,
                                                                        watched_page: WatchedPage) -> None:
    page = watched_page.page
    printed = cli_stakes()
    assert set(printed) == {a.lower() for a in network.addresses}
    open_view(page, explorer + "#/nodes", "nodes")
    rows = page.locator('[data-testid="node-row"]')
    expect(rows).to_have_count(len(network.addresses), timeout=UI_TIMEOUT_MS)
    shown = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        cell = row.locator('[data-field="stake_wei"]')
        shown[row.get_attribute("data-address").lower()] = (cell.get_attribute("data-wei"), cell.inner_text())
    assert set(shown) == set(printed)
    for address in network.addresses:
        text, (wei, shown_text) = printed[address.lower()], shown[address.lower()]
        assert int(wei) == parse_amount(text.lower()), (address, wei, text)  # exact wei
        assert shown_text.replace(",", "") == text, (address, shown_text, text)  # the same digits, BigInt-formatted
        assert int(wei) == network.chain.balances(address).active_stake_wei
    # sorted by stake, largest first: B (10 ETH) heads the table
    assert rows.first.get_attribute("data-address").lower() == network.addresses[2].lower()
    watched_page.screenshot("nodes")
    # in credit (the labelled select in the header), the same wei, the same exact formatting
    page.get_by_label("Amounts in").select_option("credit")
    for address in network.addresses:
        cell = page.locator(f'[data-testid="node-row"][data-address="{address}" i] [data-field="stake_wei"]')
        expect(cell).to_have_text(re.compile(r" credit$"))  # re-rendered
        wei = int(cell.get_attribute("data-wei"))
        assert cell.inner_text().replace(",", "") == format_wei(wei, "credit"), (address, cell.inner_text())
    # the page's formatter is exact far beyond a JS number's 2**53 (BigInt), in ETH and in credit
    for wei in (2**256 - 1, 10**18 + 1, 2**53 + 1):
        for unit in ("eth", "credit"):
            text = page.evaluate("([wei, unit]) => import('./app.js').then((m) => m.formatWei(wei, unit))",
                                 [str(wei), unit])
            assert text.replace(",", "") == format_wei(wei, unit), (wei, unit, text)


def test_a_request_shows_in_the_requests_view_without_a_reload(network: Network, explorer: str,
                                                               watched_page: WatchedPage, flow: dict[str, Any]) -> None:
    page = watched_page.page
    origin, a = network.addresses[:2]
    open_view(page, explorer + "#/requests", "requests")
    before = page.locator('[data-testid="request-row"]').count()
    mark_document(page)
    body = network.ask("one two three four five", MODEL)
    flow["answer"] = body["choices"][0]["message"]["content"]
    assert body["wwwserve"]["executor"] == a  # delegated to A (route: node 1, then A)
    row = page.locator(f'[data-testid="request-row"][data-request-id="{body["id"]}"]')
    expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
    assert same_document(page), "the page reloaded instead of updating itself"
    assert page.locator('[data-testid="request-row"]').count() == before + 1
    route = row.locator('[data-field="route"]').get_attribute("data-route")
    assert [x.lower() for x in route.split(",")] == [origin.lower(), a.lower()]
    assert row.get_attribute("data-executor").lower() == a.lower()
    assert row.locator('[data-field="signature_checked"]').inner_text() == "checked"
    assert row.locator('[data-field="source"]').inner_text() == "a user"
    live = page.locator('[data-testid="live"]')
    expect(live).to_have_attribute("data-state", "live")  # the update came over api/stream, not by polling
    assert "updated at block" in live.inner_text()
    watched_page.screenshot("requests")


def test_a_settled_duel_shows_in_the_duels_view_with_its_outcome_and_votes(network: Network, explorer: str,
                                                                          watched_page: WatchedPage,
                                                                          flow: dict[str, Any]) -> None:
    net, page = network, watched_page.page
    if "answer" not in flow:  # this test run alone
        flow["answer"] = net.ask("one two three four five", MODEL)["choices"][0]["message"]["content"]
    text = flow["answer"]
    net.wait("the duel to open", lambda: net.duel_over(text) is not None)
    duel_id = net.duel_over(text).id
    open_view(page, explorer + "#/duels", "duels")
    row = page.locator(f'[data-testid="duel-row"][data-duel-id="{duel_id}"]')
    expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
    # the windows leave the duel open for tens of seconds after it opened: the page sees it open first
    assert row.get_attribute("data-status") in OPEN, net.story(duel_id)
    mark_document(page)
    net.wait("the duel to settle", lambda: net.chain.duel(duel_id).status is DuelStatus.SETTLED, timeout_s=180,
             duel_id=duel_id)
    expect(row).to_have_attribute("data-status", "settled", timeout=UI_TIMEOUT_MS)
    assert same_document(page), "the page reloaded instead of updating itself"
    duel = net.chain.duel(duel_id)
    story = net.story(duel_id)
    assert duel.outcome is DuelOutcome.B_WON, story
    expect(row).to_have_attribute("data-outcome", OUTCOME[duel.outcome])
    assert row.locator('[data-field="outcome"]').inner_text() == "B won"
    votes_a, votes_b = duel.rounds[-1].tally()
    assert row.locator('[data-field="votes"]').inner_text() == f"{votes_a} : {votes_b}", story
    assert int(row.locator('[data-field="stake_moved_wei"]').get_attribute("data-wei")) == PARAMS.duel_bond_wei
    watched_page.screenshot("duels")

    row.locator(f'a[data-duel-id="{duel_id}"]').click()
    expect(page.locator('main[data-view="duels-detail"][aria-busy="false"]')).to_have_count(1)
    seats = page.locator('[data-testid="judge-row"]')
    expect(seats).to_have_count(sum(len(r.seats) for r in duel.rounds))
    shown = sorted((int(seats.nth(i).get_attribute("data-round")), seats.nth(i).get_attribute("data-judge").lower(),
                    seats.nth(i).get_attribute("data-vote")) for i in range(seats.count()))
    expected = sorted((r.round, judge.lower(), VOTE[vote]) for r in duel.rounds
                      for judge, vote in zip(r.seats, r.votes, strict=True))
    assert shown == expected, story
    assert page.locator('[data-testid="duel-txs-table"] tbody tr[data-event]').count() >= 4  # opened ... settled
    watched_page.screenshot("duel")


def test_the_page_works_from_the_keyboard(explorer: str, watched_page: WatchedPage) -> None:
    page = watched_page.page
    open_view(page, explorer, "overview")
    for _ in range(10):  # the skip link, then the sections
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "nav-nodes":
            break
    else:
        raise AssertionError("Tab never reached the Nodes link")
    page.keyboard.press("Enter")
    expect(page.locator('main[data-view="nodes"][aria-busy="false"]')).to_have_count(1)
    assert page.url.endswith("#/nodes")
    expect(page.locator("#nav-nodes")).to_have_attribute("aria-current", "page")
    # sorting is a button in the column header: focus it, press Enter, the table is sorted by address
    page.locator('[data-testid="sort-address"]').focus()
    page.keyboard.press("Enter")
    sorted_by = page.locator('main[data-view="nodes"] th[aria-sort="ascending"] [data-testid="sort-address"]')
    expect(sorted_by).to_have_count(1)
    assert page.evaluate("document.activeElement.dataset.testid") == "sort-address"  # focus stays on the control
    rows = page.locator('[data-testid="node-row"]')
    addresses = [rows.nth(i).get_attribute("data-address") for i in range(rows.count())]
    assert addresses == sorted(addresses, key=str.lower) and len(addresses) == 3
    # the focus ring is drawn: the focused control has a visible outline
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), outline


def test_without_the_stream_the_page_polls_and_still_follows_the_chain(network: Network, explorer: str,
                                                                      watched_page: WatchedPage) -> None:
    page = watched_page.page
    watched_page.expected_urls.append("/explorer/api/stream")  # refused below, on purpose
    page.route("**/explorer/api/stream", lambda route: route.abort())
    open_view(page, explorer, "overview")
    live = page.locator('[data-testid="live"]')
    expect(live).to_have_attribute("data-state", "polling")
    block = int(page.locator('[data-field="block"] dd').inner_text())
    mark_document(page)
    # a block every BLOCK_S: the next poll (every 5 s) sees a later one and the view follows
    expect(live).not_to_have_attribute("data-block", str(block), timeout=UI_TIMEOUT_MS)
    expect(page.locator('[data-field="block"] dd')).not_to_have_text(str(block), timeout=UI_TIMEOUT_MS)
    assert int(page.locator('[data-field="block"] dd').inner_text()) > block
    assert "polling" in live.inner_text() and same_document(page)


def test_the_same_page_served_without_a_node(network: Network, tmp_path: Path, watched_page: WatchedPage) -> None:
    """`wwwserve explorer` (its own index of the same chain, no node): the same nodes and stakes, no request log."""
    page, port, log = watched_page.page, free_port(), tmp_path / "explorer.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wwwserve.cli", "explorer", "--port", str(port),
                                 "--poll-interval", "0.2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}/explorer/"

        def indexed() -> bool:
            assert proc.poll() is None, log.read_text()
            return serves_index(base, network)

        network.wait("wwwserve explorer to index the chain", indexed, timeout_s=60)
        open_view(page, base, "overview")
        expect(page.locator("main")).to_contain_text("served without a node")
        open_view(page, base + "#/nodes", "nodes")
        rows = page.locator('[data-testid="node-row"]')
        expect(rows).to_have_count(len(network.addresses))
        for address in network.addresses:
            cell = page.locator(f'[data-testid="node-row"][data-address="{address}" i] [data-field="stake_wei"]')
            assert int(cell.get_attribute("data-wei")) == network.chain.balances(address).active_stake_wei
        open_view(page, base + "#/requests", "requests")
        expect(page.locator('[data-testid="requests-unavailable"]')).to_be_visible()
        watched_page.screenshot("standalone-requests")
    finally:
        page.goto("about:blank")  # an open api/stream holds `wwwserve explorer` past SIGTERM (no graceful timeout)
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_view_is_labelled_and_legible_with_a_screenshot(network: Network, explorer: str,
                                                              watched_page: WatchedPage, scheme: str) -> None:
    """Each view, in each colour scheme: the accessibility checks (browser_harness.accessibility_problems:
    captions, scoped headers, labels, names, text contrast at least 4.5:1), then a screenshot."""
    page = watched_page.page
    page.emulate_media(color_scheme=scheme)

    def check_and_shoot(view: str) -> None:
        details = page.locator("details")  # the chart's table: audited open, photographed closed
        details.evaluate_all("(all) => all.forEach((d) => { d.open = true; })")
        assert accessibility_problems(page) == [], (scheme, view)
        details.evaluate_all("(all) => all.forEach((d) => { d.open = false; })")
        watched_page.screenshot(f"{scheme}-{view}")

    b = network.addresses[2]
    open_view(page, explorer, "overview")
    expect(page.locator('[data-testid="stake-chart"]')).to_be_visible()
    legend = page.locator('[data-testid="stake-legend"] li[data-address]')
    assert {legend.nth(i).get_attribute("data-address").lower() for i in range(legend.count())} == \
        {a.lower() for a in network.addresses}
    # the chart ends at each node's share of the active stake on the chain now (the legend rounds to 0.1 %)
    stakes = {a.lower(): network.chain.balances(a).active_stake_wei for a in network.addresses}
    for i in range(legend.count()):
        share = float(re.search(r"([0-9.]+)%", legend.nth(i).inner_text())[1])
        address = legend.nth(i).get_attribute("data-address").lower()
        assert abs(share - 100 * stakes[address] / sum(stakes.values())) <= 0.051, (address, share, stakes)
    check_and_shoot("overview")
    open_view(page, explorer + "#/nodes", "nodes")
    check_and_shoot("nodes")
    open_view(page, explorer + f"#/nodes/{b}", "nodes-detail")
    assert page.locator('[data-testid="node-address"]').inner_text().lower() == b.lower()
    check_and_shoot("node")
    open_view(page, explorer + "#/duels", "duels")
    check_and_shoot("duels")
    duel = page.locator('[data-testid="duel-row"]').first
    duel_id = duel.get_attribute("data-duel-id")
    open_view(page, explorer + f"#/duels/{duel_id}", "duels-detail")
    check_and_shoot("duel")
    open_view(page, explorer + "#/requests", "requests")
    check_and_shoot("requests")
    for view in ("overview", "nodes", "node", "duels", "duel", "requests"):
        assert (ARTIFACTS / f"{scheme}-{view}.png").stat().st_size > 10_000
