// The host control panel: sign in with a host API key, manage the catalog and the show, drop
// products, run timed offers, and watch a live dashboard fed by the server-sent events of
// GET /api/shows/{show}/live (read with fetch so the key travels in a header, not the URL).

import { h, formatMoney, formatDuration, ServerClock, toMinor } from "./common.js";
import { blocksSection, loadBlocks } from "./blocks.js";
import { PanelChat } from "./panelchat.js";

const root = document.getElementById("app");
const clock = new ServerClock();
const KEY_STORE = "lc.hostkey";
// A key in the URL fragment (the demo's link) is taken once and removed from the address bar.
const fragmentKey = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
if (fragmentKey) {
  sessionStorage.setItem(KEY_STORE, decodeURIComponent(fragmentKey[1]));
  history.replaceState(null, "", location.pathname + location.search);
}
const state = {
  key: sessionStorage.getItem(KEY_STORE),
  me: null,
  products: [],
  stock: new Map(), // sku -> {pooled, on_hand, pool, allocated, sold} (GET /api/stock)
  shows: [],
  show: null, // id of the selected show
  showRecord: null,
  drops: new Map(),
  stats: null,
  orders: [],
  viewers: null,
  live: "off", // off | connecting | live | retrying
  toast: null,
};

// -- API -------------------------------------------------------------------------------------
class Problem extends Error {
  constructor(body) {
    super(body.field ? `${body.field}: ${body.errors?.[0]?.message || body.detail}` : body.detail);
    this.body = body;
  }
}

async function api(method, path, body) {
  const resp = await fetch(`/api${path}`, {
    method,
    headers: { Authorization: `Bearer ${state.key}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const data = await resp.json();
  if (!resp.ok) throw new Problem(data);
  if (typeof data.server_time === "number") clock.sync(data.server_time);
  return data;
}

async function act(fn, success) {
  try {
    const result = await fn();
    state.toast = success ? { kind: "info", text: success } : null;
    return result;
  } catch (err) {
    state.toast = { kind: "error", text: err.message };
    if (err.body?.status === 401) signOut();
    return undefined;
  } finally {
    render();
  }
}

// -- sign in ---------------------------------------------------------------------------------
async function signIn(key) {
  state.key = key.trim();
  const me = await act(() => api("GET", "/me"));
  if (!me) {
    state.key = null;
    render();
    return;
  }
  sessionStorage.setItem(KEY_STORE, state.key);
  state.me = me;
  await Promise.all([loadProducts(), loadShows(), loadStock()]);
  const wanted = new URLSearchParams(location.search).get("show");
  const pick = state.shows.find((s) => s.id === wanted)
    || state.shows.find((s) => s.state === "live") || state.shows[0];
  if (pick) selectShow(pick.id);
  render();
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  stopLive();
  Object.assign(state, { key: null, me: null, show: null, showRecord: null, products: [],
    stock: new Map(), shows: [], drops: new Map(), stats: null, orders: [] });
}

async function loadProducts() {
  state.products = (await act(() => api("GET", "/products")))?.products || state.products;
}

async function loadStock() {
  const listing = await act(() => api("GET", "/stock"));
  if (listing) state.stock = new Map(listing.stock.map((s) => [s.sku, s]));
}

// The stock numbers follow the show live: refreshed after the dashboard's events, at most
// once a second (the pool lives in the SKU's keys, not in the show's event stream).
let stockTimer = null;
function refreshStockSoon() {
  if (stockTimer) return;
  stockTimer = setTimeout(async () => {
    stockTimer = null;
    if (state.key && state.me) await loadStock();
  }, 1000);
}

async function loadShows() {
  state.shows = (await act(() => api("GET", "/shows")))?.shows || state.shows;
}

// -- live stream (SSE over fetch) ------------------------------------------------------------
let liveAbort = null;
let liveAttempt = 0;
let liveTimer = null;

function stopLive() {
  clearTimeout(liveTimer);
  if (liveAbort) liveAbort.abort();
  liveAbort = null;
  state.live = "off";
}

function selectShow(id) {
  stopLive();
  panelChat.reset();
  state.show = id;
  state.showRecord = state.shows.find((s) => s.id === id) || null;
  state.drops = new Map();
  state.stats = null;
  state.orders = [];
  state.blocks = [];
  startLive();
  loadBlocks(panel).then(render);
}

async function startLive() {
  const show = state.show;
  const controller = new AbortController();
  liveAbort = controller;
  state.live = "connecting";
  render();
  try {
    const resp = await fetch(`/api/shows/${encodeURIComponent(show)}/live`, {
      headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({ detail: resp.statusText }));
      state.toast = { kind: "error", text: body.detail };
      if (resp.status === 401 || resp.status === 403 || resp.status === 404) {
        state.live = "off";
        render();
        return;
      }
      throw new Error(body.detail);
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onLive(event, JSON.parse(data));
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  if (liveAbort !== controller) return;
  // The stream ended (server restart, network): come back with a fresh snapshot.
  state.live = "retrying";
  render();
  liveAttempt += 1;
  liveTimer = setTimeout(startLive, Math.min(8000, 250 * 2 ** liveAttempt) * (0.5 + Math.random()));
}

function upsertDrop(data) {
  const id = data.id || data.drop;
  if (!id) return;
  const merged = { ...(state.drops.get(id) || {}), ...data, id };
  delete merged.drop;
  state.drops.set(id, merged);
}

function onLive(event, data) {
  if (event === "event" && panelChat.onEvent(data)) {
    render();
    return;
  }
  if (event === "snapshot") {
    panelChat.load().then(render); // fresh after every (re)connect of the stream
    liveAttempt = 0;
    state.live = "live";
    state.showRecord = data.show;
    state.drops = new Map(data.drops.map((d) => [d.id, d]));
    // The line's length comes with the stats only (line events follow when it moves).
    for (const d of data.stats.drops) {
      if (state.drops.has(d.id)) upsertDrop({ id: d.id, in_line: d.in_line });
    }
    state.stats = data.stats;
    state.viewers = data.stats.viewers;
    state.orders = data.orders;
    clock.sync(data.server_time);
  } else if (event === "event") {
    if (data.type === "viewers") state.viewers = data.data.count;
    else if (data.type.startsWith("show_")) state.showRecord = { ...state.showRecord, ...data.data };
    else if (data.type === "sold_out") upsertDrop({ ...data.data, remaining: 0 });
    else if (data.type === "line") {
      upsertDrop({ id: data.data.drop, in_line: Math.max(0, data.data.next - data.data.done) });
    }
    else if (data.data) upsertDrop(data.data);
    refreshStockSoon();
  } else if (event === "order") {
    state.orders = [data, ...state.orders].slice(0, 50);
    refreshStockSoon();
  } else if (event === "stats") {
    state.stats = data;
    if (data.viewers !== null) state.viewers = data.viewers;
    clock.sync(data.server_time);
    for (const d of data.drops) upsertDrop(d);
  }
  render();
}

const panelChat = new PanelChat({ api, act, render: () => render(), show: () => state.show });

// -- actions ---------------------------------------------------------------------------------
function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function addProduct(e) {
  e.preventDefault();
  const v = formValues(e.target);
  const currency = (v.currency || "EUR").toUpperCase();
  const body = { sku: v.sku, title: v.title, prices: { [currency]: toMinor(v.price, currency) } };
  if (Number.isNaN(body.prices[currency])) {
    state.toast = { kind: "error", text: "price: expected an amount like 19.99" };
    render();
    return;
  }
  if (v.image_url) body.image_url = v.image_url;
  if (v.description) body.description = v.description;
  if (await act(() => api("POST", "/products", body), `Product ${v.sku} added`)) {
    e.target.reset();
    await loadProducts();
    render();
  }
}

async function deleteProduct(sku) {
  await act(() => api("DELETE", `/products/${sku}`), `Product ${sku} deleted`);
  await loadProducts();
  render();
}

async function createShow(e) {
  e.preventDefault();
  const v = formValues(e.target);
  const body = { title: v.title, video_url: v.video_url || "" };
  const show = await act(() => api("POST", "/shows", body), "Show created");
  if (show) {
    e.target.reset();
    await loadShows();
    selectShow(show.id);
  }
}

async function showAction(action) {
  const record = await act(() => api("POST", `/shows/${state.show}/${action}`),
    action === "start" ? "You are live" : "Show ended");
  if (record) {
    state.showRecord = { ...state.showRecord, ...record };
    await loadShows();
    render();
  }
}

async function saveVideo(e) {
  e.preventDefault();
  const v = formValues(e.target);
  const record = await act(() => api("PATCH", `/shows/${state.show}`, { video_url: v.video_url }),
    "Video URL saved");
  if (record) state.showRecord = { ...state.showRecord, ...record };
}

async function dropProduct(e, sku) {
  e.preventDefault();
  const v = formValues(e.target);
  const body = { sku, quantity: Number(v.quantity), limit: Number(v.limit) };
  // Minutes and seconds, as a host says it ("a 2 min 30 offer, opening in 5 minutes").
  const ms = (min, sec) => Math.round((Number(min || 0) * 60 + Number(sec || 0)) * 1000);
  const duration = ms(v.duration_min, v.duration_s);
  if (duration > 0) {
    body.kind = "offer";
    body.duration_ms = duration;
  }
  const opensIn = ms(v.opens_min, v.opens_s);
  if (opensIn > 0) body.opens_in_ms = opensIn;
  const drop = await act(() => api("POST", `/shows/${state.show}/drops`, body),
    `Dropped ${sku}`);
  if (drop) upsertDrop(drop);
  await loadStock();
}

async function dropAction(drop, action, body) {
  const view = await act(() => api("POST", `/shows/${state.show}/drops/${drop}/${action}`, body));
  if (view) upsertDrop(view);
  await loadStock();
  render();
}

// -- view ------------------------------------------------------------------------------------
function money(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return "-";
  return entries.map(([cur, amount]) => formatMoney(amount, cur)).join(" + ");
}

function prices(map) {
  return Object.entries(map || {}).map(([c, a]) => formatMoney(a, c)).join(" / ");
}

function signInView() {
  return h("main", { class: "signin card" },
    h("h1", {}, "Control panel"),
    h("p", { class: "muted" }, "Sign in with a host API key (",
      h("code", {}, "livecommerce hostkey create --host ID"), ")."),
    h("form", { onsubmit: (e) => { e.preventDefault(); signIn(formValues(e.target).key); } },
      h("input", { name: "key", type: "password", placeholder: "lch_...", required: true,
        autocomplete: "off", "data-testid": "key-input" }),
      h("button", { class: "primary", type: "submit", "data-testid": "sign-in" }, "Sign in")));
}

function showSection() {
  const s = state.showRecord;
  return h("section", { class: "card" },
    h("h2", {}, "Show"),
    h("div", { class: "row" },
      h("select", { "data-testid": "show-select", onchange: (e) => selectShow(e.target.value) },
        state.shows.map((x) => h("option", { value: x.id, selected: x.id === state.show || undefined },
          `${x.title} (${x.state})`))),
      s ? h("span", { class: `badge ${s.state}`, "data-testid": "show-state" }, s.state) : null),
    s ? h("div", { class: "row" },
      s.state === "scheduled" ? h("button", { class: "primary", "data-testid": "start-show",
        onclick: () => showAction("start") }, "Go live") : null,
      s.state !== "ended" ? h("button", { class: "secondary", "data-testid": "end-show",
        onclick: () => showAction("end") }, "End show") : null,
      h("a", { href: `/watch/${s.id}`, target: "_blank", "data-testid": "viewer-link" },
        "Viewer page")) : null,
    s ? h("form", { class: "row", onsubmit: saveVideo },
      h("input", { name: "video_url", value: s.video_url || "", placeholder: "Video URL",
        "aria-label": "Video URL" }),
      h("button", { class: "secondary", type: "submit" }, "Save")) : null,
    h("details", {}, h("summary", {}, "New show"),
      h("form", { class: "stack", onsubmit: createShow },
        h("input", { name: "title", placeholder: "Title", required: true,
          "data-testid": "show-title" }),
        h("input", { name: "video_url", placeholder: "Video URL (https://...)" }),
        h("button", { class: "secondary", type: "submit", "data-testid": "create-show" },
          "Create show"))));
}

// On-hand, pool and allocated of a product whose stock the store backend reports
// (docs/stock-sync.md); "typed in" for the others, whose drops take the quantity as given.
function stockCell(s) {
  if (!s || !s.pooled) return h("span", { class: "muted", "data-testid": "stock-manual" }, "typed in");
  return h("div", { class: "stock-numbers", "data-testid": "stock-numbers" },
    h("div", {}, "on hand ", h("strong", { "data-testid": "stock-on-hand" }, String(s.on_hand))),
    h("div", {}, "pool ", h("strong", { "data-testid": "stock-pool" }, String(s.pool))),
    h("div", {}, "allocated ", h("strong", { "data-testid": "stock-allocated" },
      String(s.allocated))),
    s.short ? h("div", { class: "notice error" }, `short by ${s.short}`) : null);
}

function defaultQuantity(s) {
  return s && s.pooled ? Math.max(1, Math.min(10, s.pool)) : 10;
}

function catalogSection() {
  const canDrop = state.showRecord && state.showRecord.state !== "ended";
  return h("section", { class: "card" },
    h("h2", {}, "Catalog"),
    h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", {}, "Price"),
        h("th", {}, "Stock"), h("th", {}, "Drop it"))),
      h("tbody", {}, state.products.map((p) => h("tr", { "data-testid": `product-${p.sku}` },
        h("td", {}, h("strong", {}, p.title), h("div", { class: "muted" }, p.sku)),
        h("td", {}, prices(p.prices)),
        h("td", {}, stockCell(state.stock.get(p.sku))),
        h("td", {}, h("form", { class: "drop-form", onsubmit: (e) => dropProduct(e, p.sku) },
          h("label", {}, "Qty", h("input", { name: "quantity", type: "number", min: 1,
            value: defaultQuantity(state.stock.get(p.sku)), "data-testid": "drop-quantity",
            max: state.stock.get(p.sku)?.pooled ? state.stock.get(p.sku).pool : undefined })),
          state.stock.get(p.sku)?.pooled
            ? h("span", { class: "muted", "data-testid": "drop-available" },
              `can allocate ${state.stock.get(p.sku).pool}`) : null,
          h("label", {}, "Limit", h("input", { name: "limit", type: "number", min: 1,
            value: 2, "data-testid": "drop-limit" })),
          h("fieldset", { class: "minsec", "data-testid": "drop-duration" },
            h("legend", {}, "Offer length"),
            h("label", {}, h("input", { name: "duration_min", type: "number", min: 0,
              placeholder: "0", "aria-label": "Offer length, minutes",
              "data-testid": "drop-duration-min" }), " min"),
            h("label", {}, h("input", { name: "duration_s", type: "number", min: 0, max: 59,
              placeholder: "0", "aria-label": "Offer length, seconds",
              "data-testid": "drop-duration-s" }), " s")),
          h("fieldset", { class: "minsec", "data-testid": "drop-opens-in" },
            h("legend", {}, "Opens in"),
            h("label", {}, h("input", { name: "opens_min", type: "number", min: 0,
              placeholder: "0", "aria-label": "Opens in, minutes",
              "data-testid": "drop-opens-min" }), " min"),
            h("label", {}, h("input", { name: "opens_s", type: "number", min: 0, max: 59,
              placeholder: "0", "aria-label": "Opens in, seconds",
              "data-testid": "drop-opens-s" }), " s")),
          h("button", { class: "primary", type: "submit", disabled: !canDrop,
            "data-testid": "drop-button" }, "Drop"),
          h("button", { class: "link", type: "button", onclick: () => deleteProduct(p.sku) },
            "Delete"))))))),
    h("details", { open: state.products.length === 0 || undefined },
      h("summary", {}, "Add a product"),
      h("form", { class: "stack", onsubmit: addProduct, "data-testid": "product-form" },
        h("input", { name: "sku", placeholder: "SKU (e.g. mug-blue)", required: true,
          "data-testid": "product-sku" }),
        h("input", { name: "title", placeholder: "Title", required: true,
          "data-testid": "product-title" }),
        h("div", { class: "row" },
          h("input", { name: "price", placeholder: "Price (19.99)", required: true,
            inputmode: "decimal", "data-testid": "product-price" }),
          h("input", { name: "currency", value: "EUR", maxlength: 3, size: 4,
            "aria-label": "Currency", "data-testid": "product-currency" })),
        h("input", { name: "image_url", placeholder: "Image URL (optional)" }),
        h("button", { class: "secondary", type: "submit", "data-testid": "add-product" },
          "Add product"))));
}

function dropRow(d) {
  const now = clock.now();
  let timer = "";
  if (d.state === "scheduled") timer = `opens in ${formatDuration(d.opens_at - now)}`;
  else if (d.state === "open" && d.closes_at) timer = `ends in ${formatDuration(d.closes_at - now)}`;
  const stats = state.stats?.drops?.find((x) => x.id === d.id);
  const sellOut = d.state === "closed" && typeof stats?.sell_out_ms === "number"
    ? h("div", { class: "muted", "data-testid": "drop-sell-out" },
      `sold out ${(stats.sell_out_ms / 1000).toFixed(2)} s after opening`) : null;
  const line = d.in_line > 0 ? h("div", { class: "muted", "data-testid": "drop-line" },
    `${d.in_line} in line`) : null;
  const status = d.state === "closed" && d.reason ? `closed (${d.reason.replace("_", " ")})` : d.state;
  return h("tr", { "data-testid": `drop-${d.id}`, "data-state": d.state },
    h("td", {}, h("strong", {}, d.title), h("div", { class: "muted" },
      `${d.kind === "offer" ? "offer" : "drop"} - limit ${d.limit}`)),
    h("td", {}, h("span", { class: `badge ${d.state}`, "data-testid": "drop-status" }, status),
      h("div", { class: "countdown", "data-drop-timer": d.id }, timer), sellOut, line),
    h("td", { class: "num", "data-testid": "drop-remaining" }, String(d.remaining)),
    h("td", { class: "num", "data-testid": "drop-held" }, String(d.held)),
    h("td", { class: "num", "data-testid": "drop-sold" }, String(d.sold)),
    h("td", { class: "actions" },
      d.state === "scheduled" ? h("button", { class: "secondary", "data-testid": "open-now",
        onclick: () => dropAction(d.id, "open") }, "Open now") : null,
      d.state !== "closed" ? h("button", { class: "secondary", "data-testid": "close-drop",
        onclick: () => dropAction(d.id, "close") }, "Close") : null,
      d.closes_at && d.state !== "closed" ? [
        h("button", { class: "secondary", "data-testid": "extend",
          onclick: () => dropAction(d.id, "window", { extend_ms: 30000 }) }, "+30s"),
        h("button", { class: "secondary", "data-testid": "shorten",
          onclick: () => dropAction(d.id, "window", { extend_ms: -30000 }) }, "-30s"),
      ] : null,
      h("form", { class: "inline", onsubmit: (e) => {
        e.preventDefault();
        dropAction(d.id, "restock", { quantity: Number(formValues(e.target).quantity) });
      } },
      h("input", { name: "quantity", type: "number", min: 1, value: 5, "aria-label": "Units",
        "data-testid": "restock-quantity" }),
      h("button", { class: "secondary", type: "submit", "data-testid": "restock" }, "Restock"))));
}

function dropsSection() {
  const drops = [...state.drops.values()].sort((a, b) => b.opens_at - a.opens_at);
  return h("section", { class: "card wide" },
    h("h2", {}, "Drops"),
    drops.length ? h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ["Product", "State", "Left", "Held", "Sold", ""].map(
        (t) => h("th", {}, t)))),
      h("tbody", {}, drops.map(dropRow)))
      : h("p", { class: "muted" }, "No drop yet: drop a product from the catalog."));
}

function dashboard() {
  const s = state.stats;
  const conv = s?.conversion;
  const tile = (label, value, id) => h("div", { class: "tile" },
    h("div", { class: "muted" }, label), h("div", { class: "value", "data-testid": id }, value));
  return h("section", { class: "card wide" },
    h("div", { class: "row spread" }, h("h2", {}, "Live dashboard"),
      h("span", { class: `badge ${state.live}`, "data-testid": "live-state" },
        state.live === "live" ? "real time" : state.live)),
    h("div", { class: "tiles" },
      tile("Viewers now", state.viewers ?? "-", "stat-viewers"),
      tile("Orders", s ? String(s.orders) : "-", "stat-orders"),
      tile("Revenue", money(s?.revenue), "stat-revenue"),
      tile("Conversion", conv === null || conv === undefined ? "-"
        : `${(conv * 100).toFixed(1)} %`, "stat-conversion"),
      tile("Avg order", money(s?.average_order_value), "stat-aov"),
      tile("Buyers", s ? String(s.buyers) : "-", "stat-buyers")),
    h("h3", {}, "Confirmed orders"),
    h("ol", { class: "feed", "data-testid": "order-feed" },
      state.orders.length ? state.orders.map((o) => h("li", { "data-testid": "order" },
        h("strong", {}, formatMoney(o.amount, o.currency)),
        ` ${o.quantity} x ${o.title} `,
        h("span", { class: "muted" }, `- ${o.viewer} - ${new Date(o.confirmed_at)
          .toLocaleTimeString()}`)))
        : h("li", { class: "muted" }, s && s.orders ? "" : "No order yet."),
      s && s.orders > state.orders.length ? h("li", { class: "muted", "data-testid": "order-earlier" },
        `and ${s.orders - state.orders.length} earlier`) : null));
}

function render() {
  if (!state.key || !state.me) {
    root.replaceChildren(signInView(),
      state.toast ? h("div", { class: `notice ${state.toast.kind}`, "data-testid": "toast" },
        state.toast.text) : "");
    return;
  }
  // Keep focus and typed text: do not rebuild while the host is typing in a form.
  const active = document.activeElement;
  if (active && root.contains(active) && (active.tagName === "INPUT" || active.tagName === "SELECT")
      && active.closest("form, select")) {
    pendingRender = true;
    refreshLiveParts();
    return;
  }
  pendingRender = false;
  root.replaceChildren(
    h("header", { class: "topbar" },
      h("strong", { class: "title" }, "livecommerce"),
      h("span", { class: "muted", "data-testid": "signed-in" }, `host ${state.me.host}`),
      h("button", { class: "link", onclick: () => { signOut(); render(); } }, "Sign out")),
    state.toast ? h("div", { class: `notice ${state.toast.kind}`, "data-testid": "toast" },
      state.toast.text) : "",
    h("div", { class: "grid" }, showSection(), blocksSection(panel), catalogSection(), dashboard(),
      panelChat.section(), dropsSection()));
}

// While a form field has focus only the dashboard and drop table are refreshed in place.
let pendingRender = false;
function refreshLiveParts() {
  const dash = root.querySelector("[data-testid=stat-viewers]")?.closest("section");
  if (dash) dash.replaceWith(dashboard());
  const dropsTable = root.querySelector("section.card.wide:last-child");
  if (dropsTable && !dropsTable.contains(document.activeElement)) dropsTable.replaceWith(dropsSection());
}
document.addEventListener("focusout", () => {
  setTimeout(() => { if (pendingRender) render(); }, 0);
});

setInterval(() => {
  for (const el of root.querySelectorAll("[data-drop-timer]")) {
    const d = state.drops.get(el.dataset.dropTimer);
    if (!d) continue;
    const now = clock.now();
    if (d.state === "scheduled") el.textContent = `opens in ${formatDuration(d.opens_at - now)}`;
    else if (d.state === "open" && d.closes_at) el.textContent = `ends in ${formatDuration(d.closes_at - now)}`;
  }
}, 250);

const panel = { state, api, act, render };  // what blocks.js needs of the panel
// Levels reported by the store backend move without any show event: look again now and then.
setInterval(() => { if (state.key && state.me && !document.hidden) refreshStockSoon(); }, 5000);

render();
if (state.key) signIn(state.key);
