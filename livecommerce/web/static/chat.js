// The viewer page's chat, questions, pin and reactions (docs/protocol.md, "Chat, reactions and
// questions"). The form is built once and never re-rendered (typing survives every message);
// only the list, the pin and the counters are.

import { h, randomId } from "./common.js";

export const REACTIONS = { heart: "\u2764\uFE0F", fire: "\uD83D\uDD25", clap: "\uD83D\uDC4F",
  laugh: "\uD83D\uDE02", wow: "\uD83D\uDE2E" };
const MAX_SHOWN = 50;
const TAP_BATCH_MS = 200; // taps of one burst go out as one frame with a count
const REFUSALS = {
  chat_off: "The host turned chat off.",
  muted: "You are muted in this show.",
  slow_mode: "Slow mode is on: wait a moment before sending again.",
  filtered: "That message contains a word the host does not allow.",
  auth_required: "Open your personal viewer link to chat.",
  rate_limited: "Slow down a little.",
};

export class Chat {
  /** send(message) puts a frame on the socket (or returns false when it is not live). */
  constructor({ send, canChat }) {
    this.send = send;
    this.canChat = canChat;
    this.messages = []; // oldest first, at most MAX_SHOWN, deduplicated by id
    this.pinned = null;
    this.enabled = true;
    this.slowModeS = 0;
    this.answered = new Set();
    this.pending = new Map(); // request id -> text, until chat_ack / error
    this.notice = null;
    this.totals = Object.fromEntries(Object.keys(REACTIONS).map((r) => [r, 0]));
    this.taps = {};
    this.tapTimer = null;
    this.viewer = null;

    this.list = h("ol", { class: "chat-list", "data-testid": "chat-list", "aria-live": "polite" });
    this.noticeEl = h("div", { class: "chat-notice", "data-testid": "chat-notice" });
    this.input = h("input", { name: "text", maxlength: 300, autocomplete: "off",
      placeholder: "Say something...", "aria-label": "Chat message", "data-testid": "chat-input" });
    this.question = h("input", { type: "checkbox", name: "question", "data-testid": "chat-question" });
    this.sendButton = h("button", { class: "primary", type: "submit", "data-testid": "chat-send" },
      "Send");
    this.form = h("form", { class: "chat-form", onsubmit: (e) => { e.preventDefault(); this.post(); } },
      this.input, h("label", { class: "ask" }, this.question, " Question"), this.sendButton);
    this.counters = {};
    this.burst = h("div", { class: "reaction-burst", "data-testid": "reaction-burst", "aria-hidden": "true" });
    this.bar = h("div", { class: "reaction-bar", role: "group", "aria-label": "Reactions" },
      Object.entries(REACTIONS).map(([name, emoji]) => {
        this.counters[name] = h("span", { class: "count", "data-testid": `reaction-count-${name}` }, "0");
        return h("button", { class: "reaction", type: "button", "data-testid": `react-${name}`,
          "aria-label": name, onclick: () => this.tap(name) }, emoji, this.counters[name]);
      }));
    this.el = h("section", { class: "card chat", "data-testid": "chat" },
      this.burst, this.list, this.noticeEl, this.form, this.bar);
    this.pinnedEl = h("div", { class: "pinned", "data-testid": "pinned", hidden: true });
  }

  /** The ``chat`` field of snapshot / resumed: replaces everything shown. */
  reset(state, viewer) {
    this.viewer = viewer;
    if (!state) return;
    this.messages = (state.messages || []).slice(-MAX_SHOWN);
    this.pinned = state.pinned || null;
    this.enabled = state.enabled !== false;
    this.slowModeS = state.slow_mode_s || 0;
  }

  /** A server message; returns true when it was a chat one. */
  handle(msg) {
    const data = msg.data || {};
    switch (msg.type) {
      case "chat":
        if (!this.messages.some((m) => m.id === data.id)) {
          this.messages.push(data);
          if (this.messages.length > MAX_SHOWN) this.messages.shift();
        }
        return true;
      case "chat_deleted":
        this.messages = this.messages.filter((m) => m.id !== data.id);
        if (this.pinned && this.pinned.id === data.id) this.pinned = null;
        return true;
      case "chat_pinned":
        this.pinned = data.message || null;
        return true;
      case "question_answered":
        this.answered.add(data.id);
        return true;
      case "chat_settings":
        this.enabled = data.enabled !== false;
        this.slowModeS = data.slow_mode_s || 0;
        return true;
      case "chat_muted":
        if (data.viewer === this.viewer) {
          this.notice = data.until === 0 ? null : REFUSALS.muted;
        }
        return true;
      case "reactions":
        this.react(data.counts || {});
        return true;
      case "chat_ack":
        if (!this.pending.has(msg.id)) return false;
        this.pending.delete(msg.id);
        this.notice = null;
        return true;
      case "error":
        if (!msg.id || !this.pending.has(msg.id)) return false;
        this.input.value = this.input.value || this.pending.get(msg.id);
        this.pending.delete(msg.id);
        this.notice = REFUSALS[msg.code] || msg.message || msg.code;
        return true;
      default:
        return false;
    }
  }

  post() {
    const text = this.input.value.trim();
    if (!text) return;
    const id = randomId("c");
    const message = { type: "chat", id, text, question: this.question.checked };
    if (!this.send(message)) {
      this.notice = "Not connected - try again in a moment.";
      this.render();
      return;
    }
    this.pending.set(id, text);
    this.input.value = "";
    this.question.checked = false;
  }

  tap(name) {
    this.taps[name] = (this.taps[name] || 0) + 1;
    this.float(name, 1); // your own tap shows at once; the summed count follows
    if (this.tapTimer) return;
    this.tapTimer = setTimeout(() => {
      this.tapTimer = null;
      for (const [reaction, count] of Object.entries(this.taps)) {
        this.send({ type: "react", reaction, count: Math.min(count, 50) });
      }
      this.taps = {};
    }, TAP_BATCH_MS);
  }

  react(counts) {
    for (const [name, count] of Object.entries(counts)) {
      if (!(name in REACTIONS)) continue;
      this.totals[name] += count;
      this.counters[name].textContent = String(this.totals[name]);
      this.float(name, Math.min(count, 12));
    }
  }

  float(name, n) {
    for (let i = 0; i < n; i += 1) {
      const el = h("span", { class: "floater", style: `left:${10 + Math.random() * 80}%;`
        + `animation-delay:${(i * 60) % 600}ms` }, REACTIONS[name]);
      el.addEventListener("animationend", () => el.remove());
      this.burst.append(el);
    }
    while (this.burst.childElementCount > 60) this.burst.firstElementChild.remove();
  }

  render() {
    const can = this.canChat();
    this.list.replaceChildren(...this.messages.map((m) => h("li", {
      class: `chat-message ${m.question ? "question" : ""} ${this.answered.has(m.id) ? "answered" : ""}`,
      "data-testid": "chat-message", "data-id": m.id },
      h("strong", { class: "who" }, m.name || m.viewer), " ", h("span", { class: "text" }, m.text),
      m.question ? h("span", { class: "badge scheduled q" },
        this.answered.has(m.id) ? "answered" : "question") : null)));
    this.list.scrollTop = this.list.scrollHeight;
    let notice = this.notice;
    if (!this.enabled) notice = REFUSALS.chat_off;
    else if (!notice && this.slowModeS) notice = `Slow mode: one message every ${this.slowModeS} s.`;
    if (!can && !notice) notice = "Watching as a guest: open your personal viewer link to chat.";
    this.noticeEl.textContent = notice || "";
    this.noticeEl.hidden = !notice;
    this.input.disabled = !can || !this.enabled;
    this.sendButton.disabled = !can || !this.enabled;
    this.pinnedEl.hidden = !this.pinned;
    this.pinnedEl.replaceChildren(...(this.pinned ? [
      h("span", { class: "pin-label" }, "Pinned"),
      h("strong", {}, this.pinned.name || this.pinned.viewer), " ",
      h("span", { "data-testid": "pinned-text" }, this.pinned.text)] : []));
  }
}
