// Demo shop: shows the user's live recommendations and offers; clicks and chat POST events to /v1/events.
// Open as /shop.html?user_id=U&token=T (T from `pulse token U`).
"use strict";

const params = new URLSearchParams(location.search);
const USER = params.get("user_id") || "user-00001";
const TOKEN = params.get("token") || "";
let lastDecisionId = null;
let decisionsShown = 0;

async function postEvent(fields) {
  const event = {event_id: `web-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`, user_id: USER,
                 ts: Date.now(), session_id: `web-${USER}`, ...fields};
  if (lastDecisionId) event.decision_id = lastDecisionId;
  const response = await fetch("/v1/events", {method: "POST", body: JSON.stringify(event),
    headers: {"Content-Type": "application/json", ...(TOKEN ? {Authorization: `Bearer ${TOKEN}`} : {})}});
  const result = await response.json();
  if (!response.ok || result.accepted !== 1) setStatus("error", JSON.stringify(result));
}

function setStatus(state, detail) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = `${state}${detail ? ": " + detail : ""}`;
}

const OFFERS = {
  retention_offer: ["offer", "We miss you! Here is 15% off your next order."],
  discount: ["offer discount", "Today only: 10% off the items below."],
  escalate_to_agent: ["offer escalate", "Sorry about that — an agent will contact you right away."],
};

// Why a recommendation is shown, from its score's components (they sum to the score), largest first.
const REASONS = {
  collaborative: () => "shoppers with tastes like yours liked it",
  content: (rec) => `you often look at ${rec.category}`,
  popularity: () => "popular right now",
  boost: (rec) => `${rec.category} is featured`,
};

function why(rec, decision) {
  const pinned = (decision.rules || []).some((r) => r.rule === "pin" && (r.items || []).includes(rec.item_id));
  const parts = Object.entries(rec.components || {}).filter(([name, value]) => value > 0 && REASONS[name])
    .sort((a, b) => b[1] - a[1]).slice(0, 2).map(([name]) => REASONS[name](rec));
  if (pinned) parts.unshift("picked by the shop");
  if (!decision.personalized) parts.push("not personalized: you have not consented");
  return parts.length ? `Why: ${parts.join(" · ")}` : "Why: new in the catalog";
}

function render(decision) {
  lastDecisionId = decision.decision_id;
  decisionsShown += 1;
  document.body.dataset.decisions = decisionsShown;
  document.body.dataset.lastDecision = decision.decision_id;
  document.getElementById("updated").textContent = `(decision ${decision.decision_id})`;
  const offer = document.getElementById("offer");
  const [className, text] = OFFERS[decision.action.name] || ["offer hidden", ""];
  offer.className = className;
  offer.dataset.action = decision.action.name;
  offer.textContent = text;
  const grid = document.getElementById("recommendations");
  grid.replaceChildren(...decision.recommendations.map((rec) => {
    const card = document.createElement("div");
    card.className = "item";
    card.dataset.itemId = rec.item_id;
    const title = document.createElement("b");
    title.textContent = rec.item_id;
    const meta = document.createElement("div");
    meta.className = "muted";
    meta.textContent = `${rec.category} · score ${rec.score.toFixed(2)}`;
    const reason = document.createElement("div");
    reason.className = "why";
    reason.textContent = why(rec, decision);
    const view = document.createElement("button");
    view.textContent = "View";
    view.className = "view";
    view.onclick = () => postEvent({type: "click", item_id: rec.item_id, category: rec.category});
    const cart = document.createElement("button");
    cart.textContent = "Add to cart";
    cart.onclick = () => postEvent({type: "add_to_cart", item_id: rec.item_id, category: rec.category, price: 20});
    card.append(title, meta, reason, view, cart);
    return card;
  }));
}

document.getElementById("chat").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("chat-text");
  if (input.value.trim()) postEvent({type: "chat_message", text: input.value.trim()});
  input.value = "";
};

async function main() {
  document.getElementById("who").textContent = `signed in as ${USER}`;
  const config = await (await fetch("/client-config.json")).json();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = new PulseClient({
    url: `${scheme}://${location.hostname}:${config.ws_port}${config.ws_path}`, userId: USER, token: TOKEN,
    onDecision: render, onStatus: setStatus, minDelayMs: 250, maxDelayMs: 4000,
  });
  window.pulseClient = client;
  client.start();
  postEvent({type: "page_view", category: "home"});
}

main();
