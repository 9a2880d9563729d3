// The control panel's chat card: rules (on/off, slow mode, word filter), moderators, open
// questions (pin, answered), recent messages (delete, mute) and the reaction count -- through
// the host API's /shows/{show}/chat routes, kept live by the dashboard's event stream.

import { h } from "./common.js";

const KINDS = new Set(["chat", "chat_deleted", "chat_pinned", "question_answered",
  "chat_settings", "chat_muted", "reaction_tally", "reactions"]);

export class PanelChat {
  constructor({ api, act, render, show }) {
    this.api = api;
    this.act = act;
    this.rerender = render;
    this.show = show; // () => the selected show id
    this.data = null; // GET /shows/{show}/chat
    this.reactions = 0;
  }

  async load() {
    const show = this.show();
    if (!show) return;
    const data = await this.act(() => this.api("GET", `/shows/${show}/chat`));
    if (data && show === this.show()) this.data = data;
  }

  reset() {
    this.data = null;
    this.reactions = 0;
  }

  /** One live event of the show; returns true when it was a chat one. */
  onEvent(msg) {
    if (!KINDS.has(msg.type)) return false;
    const d = this.data;
    const data = msg.data || {};
    if (msg.type === "reaction_tally") {
      for (const n of Object.values(data.counts || {})) this.reactions += n;
      return true;
    }
    if (!d) return true;
    if (msg.type === "chat") {
      if (!d.messages.some((m) => m.id === data.id)) d.messages = [...d.messages, data].slice(-50);
      if (data.question && !d.questions.some((m) => m.id === data.id)) d.questions.push(data);
    } else if (msg.type === "chat_deleted") {
      d.messages = d.messages.filter((m) => m.id !== data.id);
      d.questions = d.questions.filter((m) => m.id !== data.id);
    } else if (msg.type === "chat_pinned") {
      d.pinned = data.message || null;
    } else if (msg.type === "question_answered") {
      d.questions = d.questions.filter((m) => m.id !== data.id);
    } else if (msg.type === "chat_settings") {
      d.enabled = data.enabled;
      d.slow_mode_s = data.slow_mode_s;
    } else if (msg.type === "chat_muted") {
      if (data.until === 0) delete d.mutes[data.viewer];
      else d.mutes[data.viewer] = data.until;
    }
    return true;
  }

  async call(method, path, body, success) {
    const result = await this.act(() => this.api(method, `/shows/${this.show()}/chat${path}`, body),
      success);
    if (result !== undefined) await this.load();
    this.rerender();
    return result;
  }

  section() {
    const d = this.data;
    if (!d) return h("section", { class: "card panel-chat" }, h("h2", {}, "Chat"),
      h("p", { class: "muted" }, "Loading..."));
    const words = d.words.join(", ");
    const list = (value) => value.split(/[,\n]/).map((w) => w.trim()).filter(Boolean);
    const muteButtons = (m) => [
      h("button", { class: "link", "data-testid": "mute-5m",
        onclick: () => this.call("POST", "/mutes", { viewer: m.viewer, duration_s: 300 },
          `${m.viewer} muted for 5 min`) }, "Mute 5 min"),
      h("button", { class: "link", "data-testid": "mute-show",
        onclick: () => this.call("POST", "/mutes", { viewer: m.viewer },
          `${m.viewer} muted for the show`) }, "Mute for the show"),
    ];
    return h("section", { class: "card panel-chat", "data-testid": "panel-chat" },
      h("div", { class: "row spread" }, h("h2", {}, "Chat"),
        h("span", { class: "muted" }, "Reactions ",
          h("strong", { "data-testid": "stat-reactions" }, String(this.reactions)))),
      h("div", { class: "row" },
        h("button", { class: d.enabled ? "secondary" : "primary", "data-testid": "chat-toggle",
          onclick: () => this.call("PATCH", "", { enabled: !d.enabled },
            d.enabled ? "Chat is off" : "Chat is on") },
          d.enabled ? "Turn chat off" : "Turn chat on"),
        h("form", { class: "inline", onsubmit: (e) => {
          e.preventDefault();
          const seconds = Number(new FormData(e.target).get("slow"));
          this.call("PATCH", "", { slow_mode_s: seconds },
            seconds ? `Slow mode: ${seconds} s` : "Slow mode off");
        } },
        h("label", {}, "Slow mode (s) ", h("input", { name: "slow", type: "number", min: 0,
          max: 3600, value: d.slow_mode_s, "data-testid": "slow-mode-input" })),
        h("button", { class: "secondary", type: "submit", "data-testid": "slow-mode-save" },
          "Set"))),
      d.pinned ? h("div", { class: "pinned", "data-testid": "panel-pinned" },
        h("span", { class: "pin-label" }, "Pinned"), `${d.pinned.name}: ${d.pinned.text} `,
        h("button", { class: "link", "data-testid": "unpin",
          onclick: () => this.call("DELETE", "/pin", undefined, "Unpinned") }, "Unpin")) : null,
      h("h3", {}, "Open questions"),
      h("ol", { class: "feed", "data-testid": "open-questions" },
        d.questions.length ? d.questions.map((m) => h("li", { "data-testid": "question",
          "data-id": m.id },
          h("strong", {}, m.name), ` ${m.text} `,
          h("button", { class: "secondary", "data-testid": "pin-question",
            onclick: () => this.call("POST", `/messages/${m.id}/pin`, undefined, "Pinned") }, "Pin"),
          h("button", { class: "secondary", "data-testid": "answer-question",
            onclick: () => this.call("POST", `/messages/${m.id}/answered`, undefined, "Answered") },
          "Answered")))
          : h("li", { class: "muted" }, "No open question.")),
      h("h3", {}, "Messages"),
      h("ol", { class: "chat-list", "data-testid": "panel-chat-list" },
        d.messages.length ? d.messages.map((m) => h("li", { class: "chat-message",
          "data-testid": "panel-chat-message", "data-id": m.id },
          h("strong", {}, m.name), m.viewer in d.mutes ? h("span", { class: "badge limit" },
            "muted") : null, ` ${m.text}`,
          h("span", { class: "actions" },
            h("button", { class: "link", "data-testid": "delete-message",
              onclick: () => this.call("DELETE", `/messages/${m.id}`, undefined, "Deleted") },
            "Delete"), muteButtons(m))))
          : h("li", { class: "muted" }, "No message yet.")),
      h("details", {}, h("summary", {}, "Word filter and moderators"),
        h("form", { class: "stack", onsubmit: (e) => {
          e.preventDefault();
          const v = new FormData(e.target);
          this.call("PATCH", "", { words: list(String(v.get("words"))) }, "Word filter saved");
        } },
        h("textarea", { name: "words", placeholder: "Words or phrases, comma-separated",
          "aria-label": "Word filter", "data-testid": "chat-words" }, words),
        h("button", { class: "secondary", type: "submit", "data-testid": "chat-words-save" },
          "Save word filter")),
        h("form", { class: "stack", onsubmit: (e) => {
          e.preventDefault();
          const v = new FormData(e.target);
          this.call("PUT", "/moderators", { viewers: list(String(v.get("mods"))) },
            "Moderators saved");
        } },
        h("input", { name: "mods", value: d.moderators.join(", "), "aria-label": "Moderators",
          placeholder: "Viewer ids who may moderate", "data-testid": "chat-moderators" }),
        h("button", { class: "secondary", type: "submit", "data-testid": "chat-moderators-save" },
          "Save moderators"))));
  }
}
