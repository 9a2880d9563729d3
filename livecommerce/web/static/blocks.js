// The panel's "Blocked" card: a host blocks a viewer id or a client address for the selected
// show (POST /api/shows/{show}/blocks), sees the list, lifts a block (POST .../unblock). The
// gateway refuses a blocked viewer's join and buy attempts at the edge.

import { h } from "./common.js";

export async function loadBlocks(panel) {
  const { state, api } = panel;
  if (!state.show) { state.blocks = []; return; }
  const data = await panel.act(() => api("GET", `/shows/${state.show}/blocks`));
  state.blocks = data?.blocks || [];
}

async function block(panel, e) {
  e.preventDefault();
  const form = e.target;
  const body = Object.fromEntries(new FormData(form));
  if (!body.reason) delete body.reason;
  const made = await panel.act(() => panel.api("POST", `/shows/${panel.state.show}/blocks`, body),
    `Blocked ${body.kind} ${body.value}`);
  if (made) { form.reset(); await loadBlocks(panel); panel.render(); }
}

async function unblock(panel, b) {
  const body = { kind: b.kind, value: b.value };
  await panel.act(() => panel.api("POST", `/shows/${panel.state.show}/unblock`, body),
    `Unblocked ${b.kind} ${b.value}`);
  await loadBlocks(panel);
  panel.render();
}

export function blocksSection(panel) {
  const { state } = panel;
  if (!state.show) return null;
  const blocks = state.blocks || [];
  return h("section", { class: "card", "data-testid": "blocks" },
    h("h2", {}, "Blocked"),
    h("form", { class: "row", onsubmit: (e) => block(panel, e) },
      h("select", { name: "kind", "aria-label": "Kind", "data-testid": "block-kind" },
        h("option", { value: "viewer" }, "viewer"), h("option", { value: "address" }, "address")),
      h("input", { name: "value", placeholder: "Viewer id or IP address", required: true,
        "aria-label": "Viewer id or IP address", "data-testid": "block-value" }),
      h("input", { name: "reason", placeholder: "Reason (optional)", "aria-label": "Reason" }),
      h("button", { class: "secondary", type: "submit", "data-testid": "block-button" }, "Block")),
    blocks.length ? h("ul", { class: "feed", "data-testid": "block-list" },
      blocks.map((b) => h("li", { "data-testid": `block-${b.kind}-${b.value}` },
        h("strong", {}, `${b.kind} ${b.value}`),
        b.reason ? h("span", { class: "muted" }, ` - ${b.reason}`) : "",
        " ",
        h("button", { class: "link", "data-testid": "unblock",
          onclick: () => unblock(panel, b) }, "Unblock"))))
      : h("p", { class: "muted" }, "Nobody blocked in this show."));
}
