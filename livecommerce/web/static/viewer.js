// The viewer page: the show's video, the open drop, and buying -- over the WebSocket protocol of
// docs/protocol.md (subprotocol livecommerce.v1.json). Reconnects on its own and resumes from
// the last event id; a command whose reply was lost is sent again with the same id (the server
// answers it once: ids are idempotency keys).

import {
  h, formatMoney, formatDuration, ServerClock, randomId, videoEmbed,
} from "./common.js";
import { Chat } from "./chat.js";

const root = document.getElementById("app");
const SHOW = document.body.dataset.show;
const NO_RECONNECT = new Set([1000, 1009, 4003, 4004]);
const REGION_CURRENCY = {
  US: "USD", GB: "GBP", CH: "CHF", JP: "JPY", CA: "CAD", AU: "AUD", SE: "SEK", NO: "NOK",
  DK: "DKK", PL: "PLN", CZ: "CZK", IN: "INR", BR: "BRL", MX: "MXN", CN: "CNY", KR: "KRW",
};
const EURO = "AT BE CY DE EE ES FI FR GR HR IE IT LT LU LV MT NL PT SI SK".split(" ");

const token = readToken();
const params = new URLSearchParams(location.search);
const clock = new ServerClock();
const state = {
  show: null,
  drops: new Map(),
  viewers: null,
  viewer: null,
  lastEventId: null,
  connection: "connecting",
  // Only the viewer's own choice (remembered) or the link's; else each drop's own currency.
  currency: params.get("currency") || localStorage.getItem("lc.currency") || null,
  selected: null, // drop id the viewer tapped among several open drops
  pending: new Map(), // request id -> command, until its result arrives
  busy: null, // drop id of a buy in flight
  hold: null,
  order: null,
  notice: null, // {kind: "error"|"info", text}
  bought: new Map(), // drop id -> units bought on this page
  quantity: 1,
  ended: null, // why the connection will not come back
};
const chat = new Chat({
  send: (message) => {
    if (!socket || socket.readyState !== WebSocket.OPEN || state.connection !== "live") return false;
    socket.send(JSON.stringify(message));
    return true;
  },
  canChat: () => Boolean(token) && state.connection === "live",
});
const payment = localStorage.getItem("lc.payment") || randomId("pay_demo_");
localStorage.setItem("lc.payment", payment);

function readToken() {
  // The token comes in the URL fragment (never sent to servers); keep it for reloads.
  const match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(`lc.token.${document.body.dataset.show}`, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(`lc.token.${document.body.dataset.show}`);
}

function localeCurrency() {
  for (const lang of navigator.languages || [navigator.language]) {
    const region = (lang.split("-")[1] || "").toUpperCase();
    if (EURO.includes(region)) return "EUR";
    if (REGION_CURRENCY[region]) return REGION_CURRENCY[region];
  }
  return null;
}

// -- connection ------------------------------------------------------------------------------
let socket = null;
let attempt = 0;
let retryTimer = null;

function connect() {
  clearTimeout(retryTimer);
  if (socket && socket.readyState <= WebSocket.OPEN) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  state.connection = attempt ? "reconnecting" : "connecting";
  render();
  const ws = new WebSocket(`${scheme}://${location.host}/ws`, ["livecommerce.v1.json"]);
  socket = ws;
  ws.onopen = () => {
    const join = { type: "join", show: SHOW };
    if (token) join.token = token;
    if (state.lastEventId) join.last_event_id = state.lastEventId;
    ws.send(JSON.stringify(join));
  };
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    handle(msg);
  };
  ws.onclose = (e) => {
    if (socket !== ws) return;
    socket = null;
    if (NO_RECONNECT.has(e.code)) {
      state.connection = "closed";
      state.ended = {
        1000: "The stream has ended.", 1009: "Connection refused a too large message.",
        4003: "Your viewer link has expired: open a fresh one to buy.",
        4004: "This show does not exist.",
      }[e.code];
      render();
      return;
    }
    state.connection = "reconnecting";
    render();
    // Back-off with jitter so thousands of viewers do not come back in the same millisecond.
    const base = e.code === 4029 ? 5000 : Math.min(8000, 250 * 2 ** attempt);
    attempt += 1;
    retryTimer = setTimeout(connect, base * (0.5 + Math.random()));
  };
}

function send(command) {
  state.pending.set(command.id, command);
  if (socket && socket.readyState === WebSocket.OPEN && state.connection === "live") {
    // The first send of a buy says so: on a closed drop the gateway may then answer it at once.
    // A resend (below) does not: it may be the retry of a success, which the store replays.
    const fresh = command.type === "reserve" || command.type === "buy_now";
    socket.send(JSON.stringify(fresh ? { ...command, fresh: true } : command));
  } // otherwise sent on (re)join; the same id makes a resend safe
}

function resendPending() {
  for (const command of state.pending.values()) socket.send(JSON.stringify(command));
}

addEventListener("online", () => { attempt = 0; connect(); });
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && !socket && !state.ended) connect();
});
setInterval(() => {
  if (socket && state.connection === "live") socket.send(JSON.stringify({ type: "ping" }));
}, 20000);

// -- messages --------------------------------------------------------------------------------
function upsertDrop(data) {
  const id = data.id || data.drop;
  if (!id) return;
  const merged = { ...(state.drops.get(id) || {}), ...data, id };
  delete merged.drop;
  state.drops.set(id, merged);
}

let inBatch = false; // render once per batch, not once per message in it

function handle(msg) {
  if (msg.type === "batch") { // several pushes in one frame, in order
    inBatch = true;
    try {
      for (const item of msg.messages || []) handle(item);
    } finally {
      inBatch = false;
    }
    render();
    return;
  }
  if (typeof msg.server_time === "number") clock.sync(msg.server_time);
  if (chat.handle(msg)) {
    if (!inBatch) chat.render();
    return;
  }
  if (msg.type === "snapshot" || msg.type === "resumed") chat.reset(msg.chat, msg.viewer);
  switch (msg.type) {
    case "snapshot":
      attempt = 0;
      state.connection = "live";
      state.viewer = msg.viewer;
      state.show = msg.show;
      state.drops = new Map((msg.drops || []).map((d) => [d.id, d]));
      state.viewers = msg.viewers ?? state.viewers;
      state.lastEventId = msg.last_event_id || null;
      resendPending();
      break;
    case "resumed":
      attempt = 0;
      state.connection = "live";
      state.viewer = msg.viewer ?? state.viewer;
      resendPending();
      break;
    case "stock":
      upsertDrop(msg.data);
      break;
    case "viewers":
      state.viewers = msg.data.count;
      break;
    case "result":
      onResult(msg);
      break;
    case "pong":
      break;
    case "queued":
      // Waiting in the drop's line: the result follows (docs/protocol.md, "The waiting line").
      if (state.pending.has(msg.id)) {
        state.notice = { kind: "info", text: `You're in line (#${msg.position})`, reason: "queued" };
      }
      break;
    case "error":
      if (msg.id) state.pending.delete(msg.id);
      if (msg.id && state.busy) state.busy = null;
      state.notice = { kind: "error", text: errorText(msg) };
      break;
    default:
      if (msg.id) state.lastEventId = msg.id;
      onEvent(msg);
  }
  if (!inBatch) render();
}

function onEvent(msg) {
  const data = msg.data || {};
  if (msg.type.startsWith("show_")) {
    state.show = { ...(state.show || {}), ...data };
  } else if (msg.type === "sold_out") {
    upsertDrop({ ...data, remaining: 0 });
  } else if (data.id || data.drop) {
    upsertDrop(data);
  }
}

const REASONS = {
  not_open: "This drop has not opened yet.",
  closed: "This drop is closed.",
  sold_out: "Sold out - every unit is gone.",
  insufficient_stock: "Not that many left - try fewer.",
  limit_exceeded: "You reached the limit for this product.",
  invalid_quantity: "That quantity is not possible.",
  unknown_drop: "This product is no longer on sale.",
  unsupported_currency: "This product cannot be bought in that currency.",
  unknown_hold: "Your reservation was not found.",
  hold_expired: "Your reservation expired - the units went back on sale.",
  hold_cancelled: "Your reservation was cancelled.",
  hold_confirmed: "This reservation is already paid.",
};

function errorText(msg) {
  if (msg.code === "auth_required") return "Sign in to buy: open your personal viewer link.";
  if (msg.code === "rate_limited") return "Slow down a little and try again.";
  if (msg.code === "unavailable") return "The shop is busy - trying again.";
  if (msg.code === "busy") {
    return `So many people are buying - try again in ${Math.ceil(msg.retry_after_ms / 1000)} s.`;
  }
  return msg.message || msg.code;
}

function onResult(msg) {
  const command = state.pending.get(msg.id);
  state.pending.delete(msg.id);
  state.busy = null;
  if (!msg.ok) {
    state.notice = { kind: "error", text: REASONS[msg.reason] || msg.reason, reason: msg.reason };
    if (msg.reason === "sold_out" && command?.drop) upsertDrop({ id: command.drop, remaining: 0 });
    if (msg.op === "confirm" || msg.op === "cancel") state.hold = null;
    return;
  }
  if (typeof msg.remaining === "number" && command?.drop) {
    upsertDrop({ id: command.drop, remaining: msg.remaining });
  }
  if (msg.order) {
    state.order = msg.order;
    state.hold = null;
    const prev = state.bought.get(msg.order.drop) || 0;
    if (!msg.replay || !prev) state.bought.set(msg.order.drop, prev + msg.order.quantity);
    state.notice = null;
  } else if (msg.hold && msg.op === "reserve") {
    state.hold = msg.hold;
    state.notice = null;
  } else if (msg.op === "cancel") {
    state.hold = null;
    state.notice = { kind: "info", text: "Reservation cancelled." };
  }
}

// -- actions ---------------------------------------------------------------------------------
function buy(drop, mode) {
  state.notice = null;
  state.order = null;
  state.busy = drop.id;
  const command = {
    type: mode, id: randomId("r"), drop: drop.id, quantity: state.quantity,
    currency: currencyFor(drop),
  };
  if (mode === "buy_now") command.payment_reference = payment;
  send(command);
  render();
}

function confirmHold() {
  state.busy = state.hold.drop;
  send({ type: "confirm", id: randomId("r"), hold: state.hold.id, payment_reference: payment });
  render();
}

function cancelHold() {
  send({ type: "cancel", id: randomId("r"), hold: state.hold.id });
}

/** The viewer's remembered choice, else the show's currency (the drop's), else the locale's. */
function currencyFor(drop) {
  const prices = drop.prices || {};
  if (state.currency && prices[state.currency] !== undefined) return state.currency;
  if (drop.currency && prices[drop.currency] !== undefined) return drop.currency;
  const local = localeCurrency();
  if (local && prices[local] !== undefined) return local;
  return Object.keys(prices)[0];
}

// -- view ------------------------------------------------------------------------------------
/** Every open drop, the newest first. */
function openDrops() {
  return [...state.drops.values()].filter((d) => d.state === "open")
    .sort((a, b) => (b.opens_at || 0) - (a.opens_at || 0));
}

/** The drop to show: the one the viewer tapped while open, else the newest open one, else the
 * next scheduled, else the last closed. */
function featured() {
  const drops = [...state.drops.values()];
  const by = (f) => (a, b) => f(b) - f(a);
  const open = openDrops();
  const picked = state.selected && state.drops.get(state.selected);
  if (picked && (picked.state === "open" || open.length === 0)) return picked;
  if (open.length) return open[0];
  const scheduled = drops.filter((d) => d.state === "scheduled").sort(by((d) => -d.opens_at));
  if (scheduled.length) return scheduled[0];
  return drops.sort(by((d) => Math.max(d.opens_at || 0, d.closes_at || 0)))[0] || null;
}

function dropStatus(drop) {
  if (drop.state === "scheduled") return { key: "scheduled", text: "Coming up" };
  if (drop.state === "closed") {
    if (drop.reason === "sold_out") return { key: "sold-out", text: "Sold out" };
    if (drop.reason === "time_up") return { key: "closed", text: "Offer ended" };
    return { key: "closed", text: "Closed" };
  }
  if (drop.remaining <= 0) return { key: "sold-out", text: "Sold out" };
  const bought = state.bought.get(drop.id) || 0;
  if (bought >= drop.limit) return { key: "limit", text: "Limit reached" };
  if (drop.kind === "offer") return { key: "open", text: "Timed offer" };
  return { key: "open", text: "Live now" };
}

function countdown(drop) {
  const now = clock.now();
  if (drop.state === "scheduled") return `Opens in ${formatDuration(drop.opens_at - now)}`;
  if (drop.state === "open" && drop.closes_at) return `Ends in ${formatDuration(drop.closes_at - now)}`;
  return "";
}

function renderDrop(drop) {
  const status = dropStatus(drop);
  const currency = currencyFor(drop);
  const price = drop.prices?.[currency];
  const canBuy = status.key === "open" && state.connection === "live";
  const bought = state.bought.get(drop.id) || 0;
  const maxQty = Math.max(1, Math.min(drop.limit - bought, drop.remaining, 10));
  if (state.quantity > maxQty) state.quantity = maxQty;
  const currencies = Object.keys(drop.prices || {});
  const busy = state.busy === drop.id;

  let actions;
  if (!token) {
    actions = h("p", { class: "hint", "data-testid": "signin-hint" },
      "Watching as a guest. Open your personal viewer link to buy.");
  } else if (state.hold && state.hold.drop === drop.id && state.hold.state === "held") {
    actions = h("div", { class: "hold", "data-testid": "hold" },
      h("p", {}, `Reserved ${state.hold.quantity} for you - `,
        h("span", { class: "hold-timer", "data-expires": state.hold.expires_at },
          formatDuration(state.hold.expires_at - clock.now())), " left to pay"),
      h("div", { class: "row" },
        h("button", { class: "primary", "data-testid": "confirm", disabled: busy, onclick: confirmHold },
          `Pay ${formatMoney(state.hold.unit_price * state.hold.quantity, state.hold.currency)}`),
        h("button", { class: "secondary", onclick: cancelHold, disabled: busy }, "Cancel")));
  } else {
    actions = h("div", { class: "buy" },
      h("label", { class: "qty" }, "Qty ",
        h("select", {
          "data-testid": "quantity", disabled: !canBuy,
          onchange: (e) => { state.quantity = Number(e.target.value); },
        }, Array.from({ length: maxQty }, (_, i) => h("option", {
          value: i + 1, selected: state.quantity === i + 1 || undefined,
        }, String(i + 1))))),
      h("button", {
        class: "primary", "data-testid": "buy-now", disabled: !canBuy || busy,
        onclick: () => buy(drop, "buy_now"),
      }, busy ? "Buying..." : "Buy now"),
      h("button", {
        class: "secondary", "data-testid": "reserve", disabled: !canBuy || busy,
        onclick: () => buy(drop, "reserve"),
      }, "Reserve"));
  }

  return h("section", { class: `card drop state-${status.key}`, "data-testid": "drop-card",
    "data-drop": drop.id, "data-state": status.key },
    drop.image_url ? h("img", { class: "product-image", src: drop.image_url, alt: "" }) : null,
    h("div", { class: "drop-body" },
      h("div", { class: "row spread" },
        h("span", { class: `badge ${status.key}`, "data-testid": "status" }, status.text),
        h("span", { class: "countdown", "data-testid": "countdown" }, countdown(drop))),
      h("h2", { "data-testid": "drop-title" }, drop.title),
      drop.description ? h("p", { class: "muted" }, drop.description) : null,
      h("div", { class: "row spread" },
        h("span", { class: "price", "data-testid": "price" },
          price === undefined ? "" : formatMoney(price, currency)),
        currencies.length > 1 ? h("select", {
          class: "currency", "aria-label": "Currency", "data-testid": "currency",
          onchange: (e) => {
            state.currency = e.target.value;
            localStorage.setItem("lc.currency", state.currency);
            render();
          },
        }, currencies.map((c) => h("option", { value: c, selected: c === currency || undefined }, c)))
          : null),
      h("div", { class: "stock", "data-testid": "stock" },
        drop.remaining > 0 ? `${drop.remaining} left` : "None left",
        h("span", { class: "muted" }, ` - limit ${drop.limit} per person`)),
      h("div", { class: "bar" }, h("span", {
        style: `width:${Math.round(100 * Math.max(drop.remaining, 0) / Math.max(drop.quantity, 1))}%`,
      })),
      actions));
}

function renderOrder(order) {
  return h("section", { class: "card confirmation", "data-testid": "order-confirmation" },
    h("h2", {}, "Order confirmed"),
    h("p", {}, `${order.quantity} x ${order.title} - `,
      h("strong", {}, formatMoney(order.amount, order.currency))),
    h("p", { class: "muted" }, `Order ${order.id}`),
    h("button", { class: "secondary", onclick: () => { state.order = null; render(); } }, "OK"));
}

/** Several drops open at once: one tap away from each other (the newest first). */
function dropTabs(current) {
  const open = openDrops();
  if (open.length < 2) return "";
  return h("nav", { class: "drop-tabs", "data-testid": "drop-tabs", "aria-label": "Open drops" },
    open.map((d) => h("button", {
      class: `tab ${current && d.id === current.id ? "active" : ""}`, "data-testid": "drop-tab",
      "data-drop": d.id, "aria-pressed": String(Boolean(current && d.id === current.id)),
      onclick: () => { state.selected = d.id; state.quantity = 1; render(); },
    }, d.title)));
}

// Fixed layout; only the slots are re-rendered (moving an iframe would restart the stream).
const slots = {
  header: h("header", { class: "topbar" }),
  banner: h("div"),
  video: h("div", { class: "video" }),
  main: h("main", { class: "content" }),
};
root.replaceChildren(slots.header, slots.banner, slots.video, slots.main, chat.el);
let videoUrl = null;

function render() {
  const show = state.show;
  const drop = featured();
  const conn = {
    live: "", connecting: "Connecting...", reconnecting: "Reconnecting...", closed: "",
  }[state.connection];
  slots.header.replaceChildren(
    h("span", { class: `live-dot ${show?.state === "live" ? "on" : ""}` }),
    h("strong", { class: "title" }, show?.title || "Loading..."),
    h("span", { class: "viewers", "data-testid": "viewers" },
      state.viewers === null ? "" : `${state.viewers} watching`));
  slots.banner.replaceChildren(
    conn ? h("div", { class: "banner", "data-testid": "connection" }, conn) : "",
    state.ended ? h("div", { class: "banner error", "data-testid": "ended" }, state.ended) : "");
  if (show && (show.video_url || "") !== videoUrl) {
    videoUrl = show.video_url || "";
    slots.video.replaceChildren(videoEmbed(videoUrl));
  }
  slots.main.replaceChildren(
    state.order ? renderOrder(state.order) : "",
    state.notice ? h("div", { class: `notice ${state.notice.kind}`, "data-testid": "notice",
      "data-reason": state.notice.reason || "" }, state.notice.text) : "",
    chat.pinnedEl,
    dropTabs(drop),
    drop ? renderDrop(drop) : h("section", { class: "card waiting", "data-testid": "waiting" },
      show?.state === "ended" ? "The show has ended. Thanks for watching!"
        : "Waiting for the host to drop a product..."),
  );
  chat.render();
}

// Countdowns tick locally between messages, on the server's clock.
setInterval(() => {
  const drop = featured();
  const el = root.querySelector("[data-testid=countdown]");
  if (drop && el) el.textContent = countdown(drop);
  const timer = root.querySelector(".hold-timer");
  if (timer) timer.textContent = formatDuration(Number(timer.dataset.expires) - clock.now());
}, 250);

render();
connect();
