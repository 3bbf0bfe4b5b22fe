// The wwwserve explorer's page: hash-routed views over the JSON routes beside it (api/..., relative URLs:
// the page is served at /explorer/ by a node and by `wwwserve explorer`).
//
// Views: #/ (network totals and the stake-share chart), #/nodes, #/nodes/<address>, #/duels, #/duels/<id>,
// #/requests. Query parameters of a view live in the hash (#/nodes?sort=rank&offset=50).
// Live updates: an EventSource on api/stream; each `change` event refetches the current view. If the stream
// fails, api/totals is polled every 5 s instead, while the browser reconnects (or, when it gave up, the page
// opens the stream again every 30 s); the first `change` ends the polling.
// Money arrives as decimal strings of wei and is formatted with BigInt only: a JS number loses wei above 2**53.
// Every string the API returns is shown with textContent, never parsed as HTML (endpoints and models are
// whatever a node registered).

const PAGE = 50;
const POLL_MS = 5000;
const STREAM_RETRY_MS = 30000; // after the browser gave up on api/stream (an error status), try it again
const WEI_PER = { eth: 10n ** 18n, credit: 10n ** 15n };
const UNIT_LABEL = { eth: "ETH", credit: "credit" };
const OUTCOMES = { a_won: "A won", b_won: "B won", tie: "tie", voided: "void", void: "void" };
const VOTES = { a: "A", b: "B", abstain: "abstain", no_evidence: "no evidence" };
// Eight series colours plus "others": distinguishable, and each at least 3:1 against the chart's background
// in both themes (WCAG's figure for graphics; the legend and the table carry the same figures as text).
const PALETTE = ["#3b6fd4", "#d4603b", "#2f9e6a", "#a855c7", "#a87f0c", "#1f9bb4", "#d44a85", "#6b8e23"];
const OTHERS_COLOR = "#8a8f98";

/** A remembered setting; null where the browser keeps no storage for this page. */
function stored(key, value) {
  try {
    if (value === undefined) return localStorage.getItem(key);
    localStorage.setItem(key, value);
  } catch {
    // storage refused (a sandboxed or private context): the setting lasts for this page only
  }
  return null;
}

const state = {
  unit: stored("wwwserve-explorer-unit") === "credit" ? "credit" : "eth",
  generation: 0, // bumped per render: an older render's late answer is dropped
  rendering: null, // the promise of the render in flight
  again: false, // a change arrived during a render: render once more after it
  block: null,
  requests: null,
  mode: "connecting",
  source: null,
  pollTimer: null,
  navigated: false, // the route changed since the page loaded (focus then moves to the new view)
  keepFocus: null, // data-focus-key of the control whose action changed the route
  pendingNav: false, // the route changed and no render has shown the new view yet
};

// ---------- small helpers ----------

/** An element: h("td", {class: "num", dataset: {wei: "1"}}, "text", child, ...). Strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** SVG element (attributes set verbatim). */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  append(el, children);
  return el;
}

/** Exact decimal text of `wei` (a decimal string, bigint or int) in `unit`, trailing zeros dropped:
 * "1500000000000000000" -> "1.5 ETH". Whole part grouped in thousands. */
export function formatWei(wei, unit = state.unit) {
  if (wei === null || wei === undefined || wei === "") return "—";
  let value = BigInt(wei);
  const sign = value < 0n ? "-" : "";
  if (value < 0n) value = -value;
  const per = WEI_PER[unit];
  const whole = value / per;
  const frac = value % per;
  let text = sign + whole.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  if (frac) {
    const digits = per.toString().length - 1;
    text += "." + frac.toString().padStart(digits, "0").replace(/0+$/, "");
  }
  return `${text} ${UNIT_LABEL[unit]}`;
}

/** A table cell holding an amount: the formatted text, the raw wei in data-wei. */
function weiCell(field, wei) {
  return h("td", { class: "num", dataset: { field, wei: wei ?? "" } }, formatWei(wei));
}

function shortAddress(address) {
  return address && address.length > 14 ? `${address.slice(0, 8)}…${address.slice(-6)}` : address || "—";
}

/** A link to a node's page; the visible text is shortened, the full address is its title and label. */
function nodeLink(address, { full = false } = {}) {
  if (!address) return "—";
  return h("a", { href: `#/nodes/${address}`, class: "addr", title: address, "aria-label": full ? null : address,
                  dataset: { address } }, full ? address : shortAddress(address));
}

function duelLink(id) {
  return h("a", { href: `#/duels/${id}`, class: "mono", dataset: { duelId: id } }, `#${id}`);
}

function percent(x, digits = 1) {
  return x === null || x === undefined ? "—" : `${(100 * x).toFixed(digits)}%`;
}

function fixed(x, digits = 2) {
  return x === null || x === undefined ? "—" : Number(x).toFixed(digits);
}

function outcomeText(duel) {
  if (duel.status === "cancelled") return "cancelled";
  if (duel.outcome) return OUTCOMES[duel.outcome] || words(duel.outcome);
  return duel.status === "settled" ? "settled" : "pending";
}

/** An API code in words: "awaiting_answer" -> "awaiting answer". */
function words(code) {
  return code ? String(code).replace(/_/g, " ") : "";
}

/** A duel's status as a badge: settled, cancelled, or one of the open ones (awaiting answer, judging, ...). */
function statusBadge(status) {
  return badge(words(status), status === "settled" ? "ok" : status === "cancelled" ? "off" : "open");
}

function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

function hashParams(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

class ApiError extends Error {}

/** GET api/<path> with `params`; the JSON body, or an ApiError with the API's message. */
async function api(path, params = {}) {
  const resp = await fetch(`api/${path}${hashParams(params)}`, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const message = body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`;
    throw new ApiError(message);
  }
  return body;
}

/** Go to `hash`; `focusKey`: the data-focus-key of the control that asked, which keeps focus after the render. */
function navigate(hash, focusKey = null) {
  if (location.hash === hash) return;
  state.keepFocus = focusKey;
  location.hash = hash;
}

/** The current route: {name, arg, params} from location.hash ("#/nodes/0x..?x=1"). */
function route() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = Object.fromEntries(new URLSearchParams(query));
  const name = parts[0] || "overview";
  let arg = parts[1] ?? null;
  try {
    arg = arg === null ? null : decodeURIComponent(arg);
  } catch {
    // a malformed escape: look it up as typed (the API answers 400 or 404)
  }
  return { name, arg, params };
}

function intParam(params, key, fallback) {
  const n = Number.parseInt(params[key] ?? "", 10);
  return Number.isFinite(n) && n >= 0 ? n : fallback;
}

// ---------- tables ----------

/**
 * A table: caption, column headers (th scope=col; a column with `sort` gets a button that sorts by it), rows.
 * columns: [{label, key?, num?, sort?: {key, active, href}}]
 */
function table({ caption, columns, rows, testid, empty = "Nothing yet.", sortable = false }) {
  const head = h("tr", {}, columns.map((col) => {
    const attrs = { scope: "col", class: col.num ? "num" : null };
    if (col.sort) {
      attrs["aria-sort"] = col.sort.active ? (col.sort.ascending ? "ascending" : "descending") : "none";
      return h("th", attrs, h("button", {
        type: "button", class: "sort", "data-testid": `sort-${col.sort.key}`, "data-focus-key": `sort-${col.sort.key}`,
        onclick: () => navigate(col.sort.href, `sort-${col.sort.key}`),
      }, col.label, h("span", { class: "arrow", "aria-hidden": "true" }, col.sort.active ? (col.sort.ascending ? " ▲" : " ▼") : " ↕")));
    }
    return h("th", attrs, col.label);
  }));
  const body = rows.length
    ? rows
    : [h("tr", { class: "empty" }, h("td", { colspan: columns.length }, empty))];
  const captionEl = h("caption", {}, caption);
  if (sortable) captionEl.append(h("span", { class: "sr-only" }, " (column headers with buttons sort the table)"));
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h("table", { "data-testid": testid }, captionEl, h("thead", {}, head), h("tbody", {}, body)));
}

/** Previous/next buttons and "showing a–b of n". `go(offset)` moves. */
function pager({ offset, limit, total, label, go }) {
  const first = total ? offset + 1 : 0;
  const last = Math.min(offset + limit, total);
  return h("nav", { class: "pager", "aria-label": `${label} pages`, "data-testid": "pager" },
    h("button", { type: "button", "data-focus-key": "prev", "data-testid": "page-prev", disabled: offset <= 0,
                  onclick: () => go(Math.max(0, offset - limit), "prev") }, "← Previous"),
    h("span", { class: "muted", "data-testid": "page-status" }, `${first}–${last} of ${total}`),
    h("button", { type: "button", "data-focus-key": "next", "data-testid": "page-next", disabled: last >= total,
                  onclick: () => go(offset + limit, "next") }, "Next →"));
}

/** A labelled <select> that sets a hash parameter. */
function filterSelect({ id, label, value, options, onchange }) {
  const select = h("select", { id, "data-testid": id, "data-focus-key": id, onchange: (e) => onchange(e.target.value, id) },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return h("div", { class: "filter" }, h("label", { for: id }, label), select);
}

function dl(pairs, testid) {
  return h("dl", { class: "facts", "data-testid": testid },
    pairs.map(([term, value, field]) => h("div", { class: "fact", dataset: field ? { field } : {} },
      h("dt", {}, term), h("dd", {}, value))));
}

// ---------- views ----------

async function viewOverview() {
  // the chart may fail on its own: the totals still show
  const [totals, history] = await Promise.all([api("totals"),
    api("stake-history", { points: 200, top: 8 }).catch((err) => ({ error: err }))]);
  const d = totals.duels || {};
  const cards = [
    ["Indexed block", totals.block ?? "—", "block"],
    ["Nodes active / registered", `${totals.nodes_active} / ${totals.nodes_registered}`, "nodes"],
    ["Active stake", formatWei(totals.stake_total_wei), "stake_total_wei"],
    ["Unbonding", formatWei(totals.unbonding_total_wei), "unbonding_total_wei"],
    ["Credit", formatWei(totals.credit_total_wei), "credit_total_wei"],
    ["Reserve", formatWei(totals.reserve_wei), "reserve_wei"],
    ["Fees claimed", formatWei(totals.fees_claimed_wei), "fees_claimed_wei"],
    ["Duels", `${d.total ?? 0} (${d.open ?? 0} open, ${d.settled ?? 0} settled, ${d.cancelled ?? 0} cancelled)`, "duels"],
    ["Outcomes", `A won ${d.a_won ?? 0} · B won ${d.b_won ?? 0} · tie ${d.tie ?? 0} · void ${d.void ?? 0}`, "outcomes"],
    ["Events indexed", totals.events, "events"],
    ["Requests through this node", totals.requests_logged ?? "— (no node)", "requests_logged"],
  ];
  return [
    h("h1", {}, "Network overview"),
    h("p", { class: "muted" }, `Chain ${totals.chain_id}, contract `, h("code", {}, totals.contract),
      totals.node ? [", served by node ", nodeLink(totals.node, { full: true })] : ", served without a node", "."),
    h("section", { "aria-labelledby": "totals-h" },
      h("h2", { id: "totals-h" }, "Totals"),
      dl(cards, "totals")),
    h("section", { "aria-labelledby": "share-h" },
      h("h2", { id: "share-h" }, "Share of active stake over time"),
      history.error
        ? h("p", { class: "error", role: "alert", "data-testid": "error" }, `Could not load the chart: ${history.error.message}`)
        : stakeChart(history)),
  ];
}

/** The stake-share chart: stacked areas (each node's share of active stake per sampled block, largest at
 * the bottom, everyone else as "others" on top), a legend, and the same figures as a table. */
function stakeChart(history) {
  const blocks = history.blocks || [];
  const series = (history.series || []).map((ser, i) => ({ label: ser.address, address: ser.address, share: ser.share,
                                                            color: PALETTE[i % PALETTE.length] }));
  if ((history.others || []).some((x) => x > 0)) {
    series.push({ label: "others", address: null, share: history.others, color: OTHERS_COLOR });
  }
  if (!blocks.length || !series.length) {
    return h("p", { class: "muted", "data-testid": "stake-chart-empty" }, "No stake has been recorded yet.");
  }
  const W = 720, H = 260, L = 44, R = 12, T = 10, B = 30;
  const x0 = blocks[0], x1 = blocks[blocks.length - 1];
  const single = x1 === x0;
  const xs = (b) => L + (single ? 0 : ((b - x0) / (x1 - x0)) * (W - L - R));
  const ys = (v) => T + (1 - v) * (H - T - B);
  const below = blocks.map(() => 0);
  const areas = [];
  for (const ser of series) {
    const top = blocks.map((_, j) => below[j] + (ser.share[j] || 0));
    let points;
    if (single) {
      points = [[L, ys(top[0])], [W - R, ys(top[0])], [W - R, ys(below[0])], [L, ys(below[0])]];
    } else {
      // steps: a share holds from its block until the next sample
      const upper = [], lower = [];
      blocks.forEach((b, j) => {
        const next = j + 1 < blocks.length ? blocks[j + 1] : b;
        upper.push([xs(b), ys(top[j])], [xs(next), ys(top[j])]);
        lower.push([xs(b), ys(below[j])], [xs(next), ys(below[j])]);
      });
      points = [...upper, ...lower.reverse()];
    }
    areas.push(s("polygon", { points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
                              fill: ser.color, "fill-opacity": "0.85", stroke: ser.color },
      s("title", {}, `${ser.label}: ${percent(ser.share[ser.share.length - 1])} at block ${x1}`)));
    top.forEach((v, j) => { below[j] = v; });
  }
  const grid = [0, 0.25, 0.5, 0.75, 1].map((v) => [
    s("line", { x1: L, x2: W - R, y1: ys(v), y2: ys(v), class: "grid" }),
    s("text", { x: L - 6, y: ys(v) + 4, "text-anchor": "end", class: "tick" }, `${v * 100}%`),
  ]);
  const xticks = (single ? [x0] : [x0, Math.round((x0 + x1) / 2), x1]).map((b) =>
    s("text", { x: single ? L : xs(b), y: H - 10, "text-anchor": single ? "start" : b === x0 ? "start" : b === x1 ? "end" : "middle",
                class: "tick" }, `block ${b}`));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc",
                         "data-testid": "stake-chart", class: "chart" },
    s("title", { id: "chart-title" }, "Share of active stake by node over time"),
    s("desc", { id: "chart-desc" },
      `Stacked areas from block ${x0} to block ${x1}; the same figures are in the table below the chart.`),
    grid, areas, xticks);
  const legend = h("ul", { class: "legend", "data-testid": "stake-legend" }, series.map((ser) =>
    h("li", { dataset: ser.address ? { address: ser.address } : {} },
      h("span", { class: "swatch", style: `background:${ser.color}`, "aria-hidden": "true" }),
      ser.address ? nodeLink(ser.address) : "others",
      h("span", { class: "muted" }, ` ${percent(ser.share[ser.share.length - 1])}`))));
  // the table keeps the samples where a shown share changed (and the last): the steps of the chart, no repeats
  const shown = (j) => series.map((ser) => percent(ser.share[j])).join();
  const rows = blocks.flatMap((b, j) => (j === 0 || j === blocks.length - 1 || shown(j) !== shown(j - 1)
    ? [h("tr", {},
        h("th", { scope: "row", class: "num" }, b),
        series.map((ser) => h("td", { class: "num" }, percent(ser.share[j]))))]
    : []));
  const data = h("details", { class: "chart-data", "data-keep": "stake-table" },
    h("summary", {}, "The chart's figures as a table"),
    table({ caption: "Share of active stake at the sampled blocks where it changed, and the latest", testid: "stake-table",
            columns: [{ label: "Block", num: true }, ...series.map((ser) => ({ label: ser.address ? shortAddress(ser.address) : "others", num: true }))],
            rows }));
  return h("figure", { class: "chart-box" }, svg,
    h("figcaption", {}, "Each node's share of the total active stake (the eight largest; everyone else as others)."),
    legend, data);
}

const NODE_SORTS = { stake: "stake", rank: "Bradley–Terry rank", address: "address" };

async function viewNodes({ params }) {
  const sort = NODE_SORTS[params.sort] ? params.sort : "stake";
  const active = ["true", "false", "all"].includes(params.active) ? params.active : "all";
  const offset = intParam(params, "offset", 0);
  const page = await api("nodes", { offset, limit: PAGE, sort, active });
  const go = (changes, focusKey) => navigate(`#/nodes${hashParams({ sort, active, offset, ...changes })}`, focusKey);
  const sortCol = (key, label, num) => ({
    label, num, sort: { key, active: sort === key, ascending: key !== "stake", href: `#/nodes${hashParams({ sort: key, active, offset: 0 })}` },
  });
  const rows = page.items.map((n) => {
    const d = n.duels || {};
    return h("tr", { "data-testid": "node-row", dataset: { address: n.address } },
      h("th", { scope: "row", dataset: { field: "address" } }, nodeLink(n.address)),
      h("td", { dataset: { field: "endpoint" }, class: "endpoint" }, n.endpoint || "—"),
      h("td", { dataset: { field: "models" } }, (n.models || []).join(", ") || "—"),
      h("td", { dataset: { field: "active" } }, n.active ? badge("active", "ok") : badge("inactive", "off")),
      weiCell("stake_wei", n.stake_wei),
      h("td", { class: "num", dataset: { field: "stake_share" } }, percent(n.stake_share)),
      weiCell("unbonding_wei", n.unbonding_wei),
      weiCell("credit_wei", n.credit_wei),
      weiCell("fees_earned_wei", n.fees_earned_wei),
      h("td", { class: "num", dataset: { field: "duels" }, title: `void ${d.void ?? 0}, cancelled ${d.cancelled ?? 0}` },
        `${d.won ?? 0} / ${d.lost ?? 0} / ${d.tied ?? 0}`),
      h("td", { class: "num", dataset: { field: "rank" } }, n.rank ?? "—"),
      h("td", { class: "num", dataset: { field: "bt_score" } },
        n.bt_score === null || n.bt_score === undefined ? "—" : `${fixed(n.bt_score)} [${fixed(n.bt_low)}, ${fixed(n.bt_high)}]`));
  });
  return [
    h("h1", {}, "Nodes"),
    h("div", { class: "controls" },
      filterSelect({ id: "node-active", label: "Show", value: active,
                     options: [["all", "every node"], ["true", "active nodes"], ["false", "inactive nodes"]],
                     onchange: (v, key) => go({ active: v, offset: 0 }, key) })),
    table({
      caption: `Nodes by ${NODE_SORTS[sort]} (${page.total} in all)`, testid: "nodes-table", sortable: true,
      columns: [sortCol("address", "Address"), { label: "Endpoint" }, { label: "Models" }, { label: "Status" },
                sortCol("stake", "Stake", true), { label: "Share", num: true }, { label: "Unbonding", num: true },
                { label: "Credit", num: true }, { label: "Fees earned", num: true },
                { label: "Duels W / L / T", num: true }, sortCol("rank", "Rank", true),
                { label: "Bradley–Terry score [95% interval]", num: true }],
      rows, empty: "No node has registered yet.",
    }),
    pager({ offset, limit: PAGE, total: page.total, label: "Nodes", go: (o, key) => go({ offset: o }, key) }),
  ];
}

function duelRows(duels, { withNode = null } = {}) {
  return duels.map((d) => h("tr", { "data-testid": "duel-row", dataset: { duelId: d.id, status: d.status, outcome: d.outcome || "" } },
    h("th", { scope: "row" }, duelLink(d.id)),
    h("td", { dataset: { field: "status" } }, statusBadge(d.status)),
    h("td", { dataset: { field: "outcome" } }, withNode ? sideOutcome(d, withNode) : outcomeText(d)),
    h("td", {}, nodeLink(d.origin)),
    h("td", { dataset: { field: "a" } }, nodeLink(d.a)),
    h("td", { dataset: { field: "b" } }, nodeLink(d.b)),
    h("td", { class: "num" }, d.final_round ?? d.round),
    h("td", { class: "num", dataset: { field: "votes" } },
      d.votes_a === null || d.votes_a === undefined ? "—" : `${d.votes_a} : ${d.votes_b}`),
    weiCell("stake_moved_wei", d.stake_moved_wei),
    h("td", { dataset: { field: "cancel_reason" }, title: d.why || "" }, words(d.cancel_reason)),
    h("td", { class: "num" }, d.opened_block),
    h("td", { class: "num" }, d.settled_block ?? "—")));
}

const DUEL_COLUMNS = [{ label: "Duel" }, { label: "Status" }, { label: "Outcome" }, { label: "Origin" }, { label: "A (executor)" },
  { label: "B (challenger)" }, { label: "Round", num: true }, { label: "Votes A : B", num: true },
  { label: "Stake moved", num: true }, { label: "Why cancelled / void" }, { label: "Opened at block", num: true },
  { label: "Settled at block", num: true }];

function sideOutcome(d, address) {
  const text = outcomeText(d);
  const me = address.toLowerCase();
  const side = d.a && d.a.toLowerCase() === me ? "A" : d.b && d.b.toLowerCase() === me ? "B" : "origin";
  return `${text} (as ${side})`;
}

const DUEL_STATUSES = [["all", "every duel"], ["open", "open"], ["settled", "settled"], ["cancelled", "cancelled"]];

async function viewDuels({ params }) {
  const status = DUEL_STATUSES.some(([v]) => v === params.status) ? params.status : "all";
  const offset = intParam(params, "offset", 0);
  const node = params.node || null;
  const page = await api("duels", { offset, limit: PAGE, status, node });
  const go = (changes, focusKey) => navigate(`#/duels${hashParams({ status, node, offset, ...changes })}`, focusKey);
  return [
    h("h1", {}, "Duels"),
    h("div", { class: "controls" },
      filterSelect({ id: "duel-status", label: "Status", value: status, options: DUEL_STATUSES,
                     onchange: (v, key) => go({ status: v, offset: 0 }, key) }),
      node ? h("p", {}, "Only duels of ", nodeLink(node), " · ", h("a", { href: `#/duels${hashParams({ status })}` }, "show all")) : null),
    table({ caption: `Duels, newest first (${page.total} in all)`, testid: "duels-table", columns: DUEL_COLUMNS,
            rows: duelRows(page.items), empty: "No duel yet." }),
    pager({ offset, limit: PAGE, total: page.total, label: "Duels", go: (o, key) => go({ offset: o }, key) }),
  ];
}

async function viewNode({ arg }) {
  const n = await api(`nodes/${encodeURIComponent(arg)}`);
  const d = n.duels || {};
  return [
    h("p", { class: "crumbs" }, h("a", { href: "#/nodes" }, "Nodes"), " / ", shortAddress(n.address)),
    h("h1", {}, "Node ", h("code", { class: "addr-full", "data-testid": "node-address" }, n.address)),
    dl([
      ["Status", n.active ? badge("active", "ok") : badge("inactive", "off"), "active"],
      ["Endpoint", n.endpoint || "—", "endpoint"],
      ["Models", (n.models || []).join(", ") || "—", "models"],
      ["Stake", h("span", { dataset: { wei: n.stake_wei } }, formatWei(n.stake_wei)), "stake_wei"],
      ["Share of active stake", percent(n.stake_share), "stake_share"],
      ["Unbonding", formatWei(n.unbonding_wei), "unbonding_wei"],
      ["Bonded by open duels", formatWei(n.bonded_wei), "bonded_wei"],
      ["Credit", formatWei(n.credit_wei), "credit_wei"],
      ["Fees earned (as executor)", formatWei(n.fees_earned_wei), "fees_earned_wei"],
      ["Fees paid (as origin)", formatWei(n.fees_paid_wei), "fees_paid_wei"],
      ["Duels won / lost / tied", `${d.won ?? 0} / ${d.lost ?? 0} / ${d.tied ?? 0} (void ${d.void ?? 0}, cancelled ${d.cancelled ?? 0})`, "duels"],
      ["Bradley–Terry rank", n.rank ?? "— (no settled duel)", "rank"],
      ["Bradley–Terry score [95% interval]",
       n.bt_score === null || n.bt_score === undefined ? "—" : `${fixed(n.bt_score)} [${fixed(n.bt_low)}, ${fixed(n.bt_high)}]`, "bt_score"],
    ], "node-facts"),
    h("section", { "aria-labelledby": "node-duels-h" },
      h("h2", { id: "node-duels-h" }, "Recent duels"),
      table({ caption: "This node's duels, newest first (20 at most)", testid: "node-duels-table", columns: DUEL_COLUMNS,
              rows: duelRows(n.duels_recent || [], { withNode: n.address }), empty: "No duel yet." }),
      h("p", {}, h("a", { href: `#/duels${hashParams({ node: n.address })}` }, "Every duel of this node"))),
    h("section", { "aria-labelledby": "node-moves-h" },
      h("h2", { id: "node-moves-h" }, "Stake moved by duels"),
      table({ caption: "Stake moves, newest first (50 at most)", testid: "node-moves-table",
              columns: [{ label: "Duel" }, { label: "Kind" }, { label: "Amount", num: true }, { label: "Block", num: true }],
              rows: (n.stake_moves || []).map((m) => h("tr", {},
                h("th", { scope: "row" }, duelLink(m.duel_id)), h("td", {}, words(m.kind)), weiCell("amount_wei", m.amount_wei),
                h("td", { class: "num" }, m.block))),
              empty: "No stake moved by a duel." })),
  ];
}

async function viewDuel({ arg }) {
  const d = await api(`duels/${encodeURIComponent(arg)}`);
  const judges = (d.judges || []).map((j) => h("tr", { "data-testid": "judge-row", dataset: { round: j.round, judge: j.judge, vote: j.vote || "" } },
    h("td", { class: "num" }, j.round), h("td", { class: "num" }, j.position),
    h("th", { scope: "row" }, nodeLink(j.judge)),
    h("td", {}, j.committed ? "yes" : "no"),
    h("td", { dataset: { field: "vote" } }, j.vote ? VOTES[j.vote] || j.vote : j.committed ? "not revealed" : "—")));
  return [
    h("p", { class: "crumbs" }, h("a", { href: "#/duels" }, "Duels"), " / ", `#${d.id}`),
    h("h1", {}, `Duel #${d.id}`),
    dl([
      ["Status", statusBadge(d.status), "status"],
      ["Outcome", outcomeText(d), "outcome"],
      ["Why cancelled / void / tied", d.why || words(d.cancel_reason) || "—", "cancel_reason"],
      ["Origin", nodeLink(d.origin, { full: true }), "origin"],
      ["A (executor)", nodeLink(d.a, { full: true }), "a"],
      ["B (challenger)", d.b ? nodeLink(d.b, { full: true }) : "not drawn yet", "b"],
      ["Appellant", d.appellant ? nodeLink(d.appellant, { full: true }) : "—", "appellant"],
      ["Round", d.final_round ?? d.round, "round"],
      ["Votes A : B", d.votes_a === null || d.votes_a === undefined ? "—" : `${d.votes_a} : ${d.votes_b}`, "votes"],
      ["Stake moved", h("span", { dataset: { wei: d.stake_moved_wei ?? "" } }, formatWei(d.stake_moved_wei)), "stake_moved_wei"],
      ["Opened at block", d.opened_block, "opened_block"],
      ["Settled at block", d.settled_block ?? "—", "settled_block"],
      ["Request hash", h("code", {}, d.request_hash || "—"), "request_hash"],
      ["A's answer hash", h("code", {}, d.answer_a_hash || "—"), "answer_a_hash"],
      ["B's answer hash", h("code", {}, d.answer_b_hash || "—"), "answer_b_hash"],
    ], "duel-facts"),
    h("section", { "aria-labelledby": "judges-h" },
      h("h2", { id: "judges-h" }, "Judges and their revealed votes"),
      table({ caption: "Seats per round", testid: "judges-table",
              columns: [{ label: "Round", num: true }, { label: "Seat", num: true }, { label: "Judge" }, { label: "Committed" }, { label: "Vote" }],
              rows: judges, empty: "No judge drawn yet." })),
    h("section", { "aria-labelledby": "moves-h" },
      h("h2", { id: "moves-h" }, "Stake moved"),
      table({ caption: "Stake moves of this duel", testid: "duel-moves-table",
              columns: [{ label: "Node" }, { label: "Kind" }, { label: "Amount", num: true }, { label: "Block", num: true }],
              rows: (d.stake_moves || []).map((m) => h("tr", {},
                h("th", { scope: "row" }, nodeLink(m.node)), h("td", {}, words(m.kind)), weiCell("amount_wei", m.amount_wei),
                h("td", { class: "num" }, m.block))),
              empty: "No stake moved." })),
    h("section", { "aria-labelledby": "txs-h" },
      h("h2", { id: "txs-h" }, "Transactions"),
      table({ caption: "The duel's events, in order", testid: "duel-txs-table",
              columns: [{ label: "Event" }, { label: "Block", num: true }, { label: "Transaction" }, { label: "Log index", num: true }],
              rows: (d.transactions || []).map((t) => h("tr", { dataset: { event: t.event } },
                h("th", { scope: "row" }, t.event), h("td", { class: "num" }, t.block),
                h("td", {}, h("code", { class: "hash", title: t.tx_hash }, t.tx_hash)), h("td", { class: "num" }, t.log_index))) })),
  ];
}

async function viewRequests() {
  const page = await api("requests", { limit: 100 });
  if (page.available === false) {
    return [h("h1", {}, "Recent requests"),
      h("p", { "data-testid": "requests-unavailable" }, "This explorer runs without a node, so it has no requests to show.")];
  }
  const rows = page.items.map((r) => h("tr", { "data-testid": "request-row", dataset: { requestId: r.id, executor: r.executor || "" } },
    h("td", {}, new Date(r.time * 1000).toLocaleTimeString()),
    h("th", { scope: "row" }, h("code", { class: "hash", title: r.id }, r.id.length > 18 ? `${r.id.slice(0, 16)}…` : r.id)),
    h("td", { dataset: { field: "source" } }, r.source === "peer" ? "a peer" : "a user"),
    h("td", { dataset: { field: "model" } }, r.model, " ", h("span", { class: "muted" }, r.kind)),
    h("td", { dataset: { field: "route", route: (r.route || []).join(",") } },
      (r.route || []).flatMap((a, i) => (i ? [h("span", { "aria-hidden": "true" }, " → "), h("span", { class: "sr-only" }, ", then "), nodeLink(a)] : [nodeLink(a)]))),
    h("td", { dataset: { field: "executor" } }, r.executor ? nodeLink(r.executor) : "none answered"),
    h("td", { class: "num", dataset: { field: "latency_ms" } }, `${r.latency_ms} ms`),
    h("td", { class: "num" }, r.status),
    h("td", {}, r.stream ? "yes" : "no"),
    h("td", { dataset: { field: "signature_checked" } }, r.signature_checked ? badge("checked", "ok") : "ran here"),
    h("td", {}, r.error || "")));
  return [
    h("h1", {}, "Recent requests through this node"),
    table({ caption: `The latest ${page.items.length} of ${page.total} requests, newest first`, testid: "requests-table",
            columns: [{ label: "Time" }, { label: "Request" }, { label: "From" }, { label: "Model" }, { label: "Route (origin first)" },
                      { label: "Executor" }, { label: "Latency", num: true }, { label: "HTTP", num: true },
                      { label: "Streamed" }, { label: "Signature" }, { label: "Error" }],
            rows, empty: "No request yet." }),
  ];
}

const VIEWS = {
  overview: { render: viewOverview, nav: "overview", title: "Overview" },
  nodes: { render: (r) => (r.arg ? viewNode(r) : viewNodes(r)), nav: "nodes", title: "Nodes" },
  duels: { render: (r) => (r.arg ? viewDuel(r) : viewDuels(r)), nav: "duels", title: "Duels" },
  requests: { render: viewRequests, nav: "requests", title: "Requests" },
};

// ---------- rendering ----------

/** Render the current route into <main>. `live`: a refresh of the same view (keep focus and scroll, no
 * focus move), rather than a navigation. */
async function render({ live = false } = {}) {
  live = live && !state.pendingNav; // a refresh that overtakes a navigation finishes it (focus included)
  const gen = ++state.generation;
  const r = route();
  const view = VIEWS[r.name];
  const main = document.getElementById("view");
  for (const a of document.querySelectorAll("nav a[data-route]")) {
    if (view && a.dataset.route === view.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!live) main.setAttribute("aria-busy", "true");
  let content;
  try {
    content = view ? await view.render(r) : [h("h1", {}, "Not found"), h("p", {}, "No such view. ", h("a", { href: "#/" }, "Overview"))];
  } catch (err) {
    if (gen !== state.generation) return;
    if (live && main.dataset.view === (r.arg ? `${r.name}-detail` : r.name)) {
      return; // a refresh that failed leaves what is shown; the next change tries again
    }
    content = [h("h1", {}, view ? view.title : "Error"),
      h("p", { class: "error", role: "alert", "data-testid": "error" }, err instanceof ApiError ? err.message : `Could not load: ${err.message}`)];
  }
  if (gen !== state.generation) return; // a newer render owns the page
  const fresh = document.createElement("div");
  fresh.append(...[content].flat(Infinity).filter(Boolean));
  const viewName = r.arg ? `${r.name}-detail` : r.name;
  if (live && main.dataset.view === viewName) {
    // what the reader opened stays open (the chart's table)
    for (const open of main.querySelectorAll("details[open][data-keep]")) {
      const same = fresh.querySelector(`details[data-keep="${CSS.escape(open.dataset.keep)}"]`);
      if (same) same.open = true;
    }
    if (fresh.innerHTML === main.innerHTML) {
      // nothing the reader can see changed: keep the page as it is (focus, selection, scroll untouched)
      main.setAttribute("aria-busy", "false");
      return;
    }
  }
  const focused = document.activeElement && main.contains(document.activeElement)
    ? document.activeElement.getAttribute("data-focus-key") || document.activeElement.id : null;
  const scroll = window.scrollY;
  main.replaceChildren(...fresh.childNodes);
  main.dataset.view = viewName;
  main.setAttribute("aria-busy", "false");
  document.title = `${view ? view.title : "Not found"} · wwwserve explorer`;
  if (live) {
    if (focused) {
      const again = main.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`) || document.getElementById(focused);
      if (again) again.focus({ preventScroll: true });
    }
    window.scrollTo(0, scroll);
  } else if (state.keepFocus) {
    // a control of this view changed the route (sort, filter, page): focus stays on it
    const again = main.querySelector(`[data-focus-key="${CSS.escape(state.keepFocus)}"]:not(:disabled)`);
    (again || main).focus({ preventScroll: true });
  } else if (state.navigated) {
    main.focus({ preventScroll: true }); // a screen reader starts at the new view
  }
  state.keepFocus = null;
  state.pendingNav = false;
  main.dataset.rendered = String(Number(main.dataset.rendered || 0) + 1);
}

/** Refresh the current view after a change; at most one render in flight, one more queued. */
function refresh() {
  if (state.rendering) {
    state.again = true;
    return;
  }
  state.rendering = render({ live: true }).finally(() => {
    state.rendering = null;
    if (state.again) {
      state.again = false;
      refresh();
    }
  });
}

function setLive(mode, block = state.block) {
  state.mode = mode;
  state.block = block;
  const live = document.getElementById("live");
  live.dataset.state = mode;
  live.dataset.block = block ?? "";
  const at = block === null || block === undefined ? "" : ` · updated at block ${block}`;
  const words = { live: "live", polling: "polling every 5 s", connecting: "connecting…", offline: "offline" };
  document.getElementById("live-text").textContent = `${words[mode]}${at}`;
}

function onChange(data) {
  const changed = data.block !== state.block || data.requests !== state.requests;
  state.requests = data.requests;
  setLive(state.mode === "polling" ? "polling" : "live", data.block);
  if (changed) refresh();
}

function startStream() {
  if (!("EventSource" in window)) {
    startPolling();
    return;
  }
  const source = new EventSource("api/stream");
  state.source = source;
  source.addEventListener("open", () => {
    stopPolling();
    setLive("live");
  });
  source.addEventListener("change", (event) => {
    if (state.mode !== "live") {
      stopPolling();
      state.mode = "live";
    }
    try {
      onChange(JSON.parse(event.data));
    } catch {
      refresh();
    }
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself while readyState is CONNECTING; poll meanwhile, and for good once
    // it has given up (CLOSED).
    if (source.readyState === EventSource.CLOSED) {
      state.source = null;
      setTimeout(startStream, STREAM_RETRY_MS);
    }
    startPolling();
  });
}

function startPolling() {
  if (state.pollTimer !== null) return;
  setLive("polling");
  const poll = async () => {
    try {
      const totals = await api("totals");
      onChange({ block: totals.block, requests: totals.requests_logged });
    } catch {
      setLive("offline");
    }
  };
  state.pollTimer = setInterval(poll, POLL_MS);
  poll();
}

function stopPolling() {
  if (state.pollTimer !== null) clearInterval(state.pollTimer);
  state.pollTimer = null;
}

async function header() {
  try {
    const totals = await api("totals");
    state.requests = totals.requests_logged;
    setLive(state.mode, totals.block);
    document.getElementById("network").textContent = `chain ${totals.chain_id}`;
  } catch {
    // the view shows the error
  }
}

function init() {
  const unit = document.getElementById("unit");
  unit.value = state.unit;
  unit.addEventListener("change", () => {
    state.unit = unit.value === "credit" ? "credit" : "eth";
    stored("wwwserve-explorer-unit", state.unit);
    refresh();
  });
  window.addEventListener("hashchange", () => {
    state.navigated = true;
    state.pendingNav = true;
    render();
  });
  document.getElementById("skip-link").addEventListener("click", (e) => {
    e.preventDefault(); // the hash holds the route; move focus instead of navigating
    document.getElementById("view").focus();
  });
  header();
  render();
  startStream();
}

init();
