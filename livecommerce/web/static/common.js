// Shared helpers of the panel and the viewer page: DOM building, money, the server clock.

/** Create an element: h("div", {class: "x", onclick: fn}, child, "text", ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed under style-src 'self'
    else if (k === "selected" || k === "disabled" || k === "value") el[k] = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const digitsCache = new Map();

/** Fraction digits of an ISO 4217 currency (EUR 2, JPY 0, KWD 3). */
export function currencyDigits(currency) {
  if (!digitsCache.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat("en", { style: "currency", currency })
        .resolvedOptions().maximumFractionDigits;
    } catch { /* unknown code: keep 2 */ }
    digitsCache.set(currency, digits);
  }
  return digitsCache.get(currency);
}

/** Minor units -> "19,99 €" in the viewer's locale. */
export function formatMoney(minor, currency, locale = navigator.language) {
  const value = minor / 10 ** currencyDigits(currency);
  try {
    return new Intl.NumberFormat(locale, { style: "currency", currency }).format(value);
  } catch {
    return `${value.toFixed(currencyDigits(currency))} ${currency}`;
  }
}

/** Parse "12.50" in a currency's major units into minor units (integer), or NaN. */
export function toMinor(text, currency) {
  const value = Number(String(text).replace(",", "."));
  if (!Number.isFinite(value) || value < 0) return NaN;
  return Math.round(value * 10 ** currencyDigits(currency));
}

/**
 * The server's clock as seen from here: every message with a server time re-anchors it, and
 * now() advances it with the local monotonic clock (never the local wall clock alone).
 */
export class ServerClock {
  constructor() {
    this.anchorServer = null;
    this.anchorLocal = 0;
  }
  sync(serverMs) {
    if (typeof serverMs !== "number") return;
    this.anchorServer = serverMs;
    this.anchorLocal = performance.now();
  }
  get known() {
    return this.anchorServer !== null;
  }
  now() {
    if (this.anchorServer === null) return Date.now();
    return this.anchorServer + (performance.now() - this.anchorLocal);
  }
}

/** 75_000 -> "1:15"; 3_700_000 -> "1:01:40". */
export function formatDuration(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const s = total % 60;
  const m = Math.floor(total / 60) % 60;
  const hours = Math.floor(total / 3600);
  const mm = hours ? String(m).padStart(2, "0") : String(m);
  return (hours ? `${hours}:` : "") + `${mm}:${String(s).padStart(2, "0")}`;
}

export function randomId(prefix) {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Embed for a show's video URL: a <video> for media files, an <iframe> otherwise. */
export function videoEmbed(url) {
  if (!url) return h("div", { class: "video-empty" }, "The stream starts soon");
  if (/\.(mp4|webm|ogg|m3u8)(\?|$)/i.test(url)) {
    return h("video", { src: url, autoplay: true, muted: true, playsinline: true, controls: true });
  }
  return h("iframe", {
    src: url, title: "Live video", allow: "autoplay; fullscreen; picture-in-picture",
    allowfullscreen: true, referrerpolicy: "no-referrer",
  });
}
