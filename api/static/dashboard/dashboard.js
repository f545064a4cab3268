// The analysts' dashboard: every panel reads the ledger's read API with the token kept in
// this tab's sessionStorage; the live tail follows GET /v1/stream. No build step: a plain
// module, with Chart.js's UMD bundle loaded before it (the global `Chart`).

const TOKEN_KEY = "ledger.readToken";
const TAIL_ROWS = 50;
const TERMINAL = ["delivered", "undelivered", "failed", "rejected", "expired"];
const STATUS_COLOURS = {
  delivered: "#2e9d52", read: "#1b7a3e", sent: "#6aa5f0", queued: "#b5c7e3", submitted: "#d5dde9",
  undelivered: "#e3a23b", failed: "#d0493a", rejected: "#8e2c22", expired: "#8a8f99", none: "#c9ccd2",
};

/** What the page exposes for tests and curious analysts: each chart's data, and when the
 * first load of every panel finished. */
const dashboard = { charts: {}, loadedMs: null, tail: [] };
window.dashboard = dashboard;

class Unauthorized extends Error {}
class NotServed extends Error {}

const $ = (selector) => document.querySelector(selector);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
  });
  if (response.status === 401) throw new Unauthorized();
  if (response.status === 404 || response.status === 405) {
    // A route this server does not have answers Litestar's bare "Not Found".
    const problem = await response.json().catch(() => ({}));
    const known = problem.detail && !problem.detail.startsWith("Not Found");
    throw new NotServed(known ? problem.detail : "this server does not serve it yet");
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || `${response.status} ${response.statusText}`);
  }
  return response.json();
}

// --- formatting -------------------------------------------------------------------------

const percent = (rate) => (rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)} %`);
const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const money = (amount) => (amount === null || amount === undefined || Number.isNaN(amount)
  ? "–" : Number(amount).toFixed(5));
function millis(ms) {
  if (ms === null || ms === undefined) return "–";
  const short = (n) => String(Number(n.toFixed(1)));
  if (ms >= 3600000) return `${short(ms / 3600000)} h`;
  if (ms >= 60000) return `${short(ms / 60000)} min`;
  if (ms >= 1000) return `${short(ms / 1000)} s`;
  return `${Math.round(ms)} ms`;
}
const isoDay = (date) => date.toISOString().slice(0, 10);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(cells, attributes = {}) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : cell(String(c)));
  for (const [name, value] of Object.entries(attributes)) tr.setAttribute(name, value);
  return tr;
}

function note(panel, text) {
  $(`#${panel} [data-status]`).textContent = text;
}

function chart(id, config) {
  dashboard.charts[id]?.destroy();
  const made = new Chart(document.getElementById(id), {
    ...config,
    options: {
      maintainAspectRatio: false, animation: false, responsive: true,
      plugins: { legend: { display: config.type === "doughnut" } },
      ...config.options,
    },
  });
  dashboard.charts[id] = made;
  return made;
}

const rateAxis = { y: { min: 0, max: 100, ticks: { callback: (v) => `${v} %` } } };

// --- panels -----------------------------------------------------------------------------

function range() {
  const days = Number($("#days").value);
  const end = new Date();
  const start = new Date(end.getTime() - (days - 1) * 86400000);
  return { start: isoDay(start), end: isoDay(end) };
}

async function daily({ start, end }, meanings) {
  const days = await api(`/v1/metrics/daily?start=${start}&end=${end}`);
  const totals = { messages: 0, units: 0, amount: 0, statuses: {}, errors: {} };
  for (const day of days) {
    totals.messages += day.messages;
    totals.units += day.units;
    totals.amount += Number(day.total_amount);
    for (const [status, n] of Object.entries(day.statuses)) totals.statuses[status] = (totals.statuses[status] || 0) + n;
    for (const [code, n] of Object.entries(day.error_codes)) totals.errors[code] = (totals.errors[code] || 0) + n;
  }
  const delivered = totals.statuses.delivered || 0;
  const outcomes = TERMINAL.reduce((sum, s) => sum + (totals.statuses[s] || 0), 0);
  $("#tile-messages").textContent = count(totals.messages);
  $("#tile-rate").textContent = outcomes ? percent(delivered / outcomes) : "–";
  $("#tile-cost").textContent = delivered ? money(totals.amount / delivered) : "–";
  $("#tile-units").textContent = count(totals.units);

  chart("chart-daily", {
    type: "bar",
    data: {
      labels: days.map((d) => d.day),
      datasets: [{
        label: "delivery rate", backgroundColor: "#2f6fde", maxBarThickness: 48,
        data: days.map((d) => (d.delivery_rate === null ? null : d.delivery_rate * 100)),
      }],
    },
    options: { scales: rateAxis },
  });
  note("panel-daily", days.length ? "" : "No messages in this range.");

  const statuses = Object.entries(totals.statuses).sort((a, b) => b[1] - a[1]);
  chart("chart-status", {
    type: "doughnut",
    data: {
      labels: statuses.map(([s]) => s),
      datasets: [{
        data: statuses.map(([, n]) => n),
        backgroundColor: statuses.map(([s]) => STATUS_COLOURS[s] || "#999"),
      }],
    },
    options: { plugins: { legend: { position: "right" } } },
  });
  note("panel-status", statuses.length ? "" : "No messages in this range.");

  const errors = Object.entries(totals.errors).sort((a, b) => b[1] - a[1]).slice(0, 10);
  const failing = Object.values(totals.errors).reduce((a, b) => a + b, 0);
  $("#errors tbody").replaceChildren(...errors.map(([code, n]) => row(
    [cell(code, "mono"), meanings[code] || "undocumented code", cell(count(n), "num"),
      cell(percent(n / failing), "num")],
    { "data-code": code, "data-count": n },
  )));
  note("panel-errors", errors.length ? "" : "No errors in this range.");
}

async function hourly({ start, end }) {
  const report = await api(`/v1/metrics/breakdown?start=${start}&end=${end}&by=hour&limit=1000`);
  const rows = [...report.rows].sort((a, b) => String(a.hour).localeCompare(String(b.hour)));
  chart("chart-hourly", {
    type: "line",
    data: {
      labels: rows.map((r) => String(r.hour).slice(0, 16).replace("T", " ")),
      datasets: [
        {
          label: "delivered", borderColor: "#2f6fde", backgroundColor: "#2f6fde", tension: 0.2,
          data: rows.map((r) => (r.delivery_rate === null ? null : r.delivery_rate * 100)),
        },
        {
          label: "delivered or sent", borderColor: "#9bbcf2", backgroundColor: "#9bbcf2",
          borderDash: [4, 3], tension: 0.2,
          data: rows.map((r) => (r.delivery_rate_with_sent === null ? null : r.delivery_rate_with_sent * 100)),
        },
      ],
    },
    options: { scales: rateAxis, plugins: { legend: { display: true } } },
  });
  note("panel-hourly", rows.length ? "" : "No messages in this range.");
  histogram("chart-queue", "panel-queue", report.latency?.queue || [], "#6aa5f0");
  histogram("chart-carrier", "panel-carrier", report.latency?.carrier || [], "#2e9d52");
}

function histogram(id, panel, buckets, colour) {
  let lower = 0;
  const labels = buckets.map((b) => {
    const label = b.le_ms === null ? `> ${millis(lower)}` : `≤ ${millis(b.le_ms)}`;
    lower = b.le_ms ?? lower;
    return label;
  });
  chart(id, {
    type: "bar",
    data: { labels, datasets: [{ label: "messages", data: buckets.map((b) => b.count), backgroundColor: colour }] },
  });
  const total = buckets.reduce((sum, b) => sum + b.count, 0);
  note(panel, total ? `${count(total)} messages` : "No timings in this range.");
}

let countryRows = [];
let countrySort = "messages";

async function countries({ start, end }) {
  const report = await api(`/v1/metrics/breakdown?start=${start}&end=${end}&by=country,carrier&limit=500`);
  countryRows = report.rows;
  renderCountries();
}

function renderCountries() {
  const key = countrySort;
  const value = (r) => (r[key] === null || r[key] === undefined ? -1 : Number(r[key]));
  const sorted = [...countryRows].sort((a, b) => value(b) - value(a) || b.messages - a.messages);
  $("#countries tbody").replaceChildren(...sorted.map((r) => row([
    r.country || "unknown", r.carrier || "unknown", cell(count(r.messages), "num"),
    cell(count(r.delivered), "num"), cell(percent(r.delivery_rate), "num"),
    cell(percent(r.delivery_rate_with_sent), "num"), cell(millis(r.queue_p95_ms), "num"),
    cell(millis(r.carrier_p95_ms), "num"), cell(money(r.cost_per_delivered === null ? null : Number(r.cost_per_delivered)), "num"),
  ], { "data-country": r.country ?? "", "data-carrier": r.carrier ?? "", "data-messages": r.messages })));
  note("panel-countries", countryRows.length ? "" : "No messages in this range.");
}

async function alerts() {
  const { alerts: firing } = await api("/v1/alerts");
  // carrier or sender null: the alert is for every one of them (a sender's has no country).
  const where = (a) => (a.sender ? `sender ${a.sender}`
    : a.carrier ? `${a.country} · ${a.carrier}` : `${a.country} · every carrier`);
  $("#alerts tbody").replaceChildren(...firing.map((a) => row([
    where(a), cell(count(a.messages), "num"), cell(percent(a.delivery_rate), "num"),
    cell(percent(a.baseline_rate), "num"), cell(`${a.drop.toFixed(1)} pp`, "num"),
    new Date(a.since).toLocaleString(),
  ], { "data-where": where(a) })));
  note("panel-alerts", firing.length ? "" : "No alert is firing.");
}

// --- the live tail ----------------------------------------------------------------------

let source = null;

function follow() {
  source?.close();
  // EventSource cannot send headers: the stream takes the token as ?token= (README, "Live
  // feed"). It reconnects by itself, sending Last-Event-ID, and the stream resumes there.
  source = new EventSource(`/v1/stream?token=${encodeURIComponent(token())}`);
  const state = $("#tail-state");
  source.onopen = () => { state.textContent = "live"; state.className = "badge live"; };
  source.onerror = () => { state.textContent = "reconnecting"; state.className = "badge"; };
  source.addEventListener("ledger_event", (message) => {
    const event = JSON.parse(message.data);
    dashboard.tail.unshift(event);
    dashboard.tail.length = Math.min(dashboard.tail.length, TAIL_ROWS);
    const link = cell(event.message_uuid, "mono");
    const tr = row([
      new Date(event.recorded_at).toLocaleTimeString(), event.status ?? event.event_type, link,
      event.recipient ?? "", cell(String(event.position), "num"),
    ], { "data-uuid": event.message_uuid, "data-id": message.lastEventId, class: "clickable" });
    tr.addEventListener("click", () => audit(event.message_uuid));
    const body = $("#tail tbody");
    body.prepend(tr);
    while (body.children.length > TAIL_ROWS) body.lastElementChild.remove();
  });
  source.addEventListener("error", (message) => {
    if (!message.data) return; // a lost connection: EventSource reconnects by itself
    $("#problem").textContent = JSON.parse(message.data).error;
    $("#problem").hidden = false;
  });
}

// --- search and audit -------------------------------------------------------------------

async function search(form) {
  const data = new FormData(form);
  const uuid = String(data.get("uuid") || "").trim();
  if (uuid) {
    await audit(uuid);
    return;
  }
  const query = new URLSearchParams({ limit: "20" });
  for (const name of ["to", "status"]) if (data.get(name)) query.set(name, String(data.get(name)));
  const page = await api(`/v1/messages?${query}`);
  $("#results tbody").replaceChildren(...page.items.map((m) => {
    const tr = row([
      cell(m.message_uuid, "mono"), m.status ?? "–", m.to_number ?? "", m.error_code ?? "",
      new Date(m.first_event_at).toLocaleString(),
    ], { class: "clickable", "data-uuid": m.message_uuid });
    tr.addEventListener("click", () => audit(m.message_uuid));
    return tr;
  }));
  note("panel-search", page.items.length ? "" : "No message matches.");
}

async function audit(uuid) {
  let trail;
  try {
    trail = await api(`/v1/messages/${encodeURIComponent(uuid)}/events`);
  } catch (error) {
    if (!(error instanceof NotServed)) throw error;
    note("panel-search", error.message);
    $("#audit").hidden = true;
    return;
  }
  $("#audit-uuid").textContent = trail.message_uuid;
  $("#audit-events tbody").replaceChildren(...trail.events.map((e) => {
    const seal = document.createElement("td");
    if (e.seal) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = `block ${e.seal.block}, leaf ${e.seal.leaf_index}`;
      const proof = document.createElement("pre");
      proof.textContent = JSON.stringify(e.seal, null, 1);
      details.append(summary, proof);
      seal.append(details);
    } else {
      seal.textContent = "not sealed yet";
    }
    return row([
      cell(String(e.position), "num"), e.event_type, e.status ?? "", e.occurred_at ?? "",
      e.recorded_at, `${e.meta.source}: ${e.meta.signature}`, seal,
    ], { "data-position": e.position });
  }));
  $("#audit").hidden = false;
  $("#panel-search").scrollIntoView({ block: "nearest" });
}

// --- loading ----------------------------------------------------------------------------

async function panel(names, load) {
  try {
    await load();
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    const text = error instanceof NotServed ? `Not available: ${error.message}.` : `Could not load: ${error.message}`;
    for (const name of names) note(name, text);
  }
}

async function load() {
  const when = range();
  $("#problem").hidden = true;
  const meanings = Object.fromEntries((await api("/v1/error-codes")).map((e) => [e.code, e.meaning]));
  await Promise.all([
    panel(["panel-daily", "panel-status", "panel-errors"], () => daily(when, meanings)),
    panel(["panel-hourly", "panel-queue", "panel-carrier"], () => hourly(when)),
    panel(["panel-countries"], () => countries(when)),
    panel(["panel-alerts"], alerts),
  ]);
}

async function open() {
  try {
    await load();
  } catch (error) {
    if (error instanceof Unauthorized) {
      signIn("The server refused this token (401): copy it again from 'ledger token' or LEDGER_API_TOKENS.");
      return;
    }
    $("#problem").textContent = `The dashboard could not load: ${error.message}`;
    $("#problem").hidden = false;
  }
  if (dashboard.loadedMs === null) {
    dashboard.loadedMs = performance.now();
    document.documentElement.dataset.loaded = String(Math.round(dashboard.loadedMs));
  }
  if (!source) follow();
}

function signIn(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  source?.close();
  source = null;
  const error = $("#login-error");
  error.textContent = message || "";
  error.hidden = !message;
  const dialog = $("#login");
  if (!dialog.open) dialog.showModal();
  $("#token").focus();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#login").close();
  open();
});
$("#range").addEventListener("submit", (event) => { event.preventDefault(); open(); });
$("#sign-out").addEventListener("click", () => signIn(""));
$("#search").addEventListener("submit", (event) => {
  event.preventDefault();
  search(event.target).catch((error) => {
    if (error instanceof Unauthorized) signIn("The server refused this token (401).");
    else note("panel-search", `Could not search: ${error.message}`);
  });
});
for (const button of document.querySelectorAll("[data-sort]")) {
  button.addEventListener("click", () => {
    countrySort = button.dataset.sort;
    for (const other of document.querySelectorAll("[data-sort]")) other.classList.toggle("active", other === button);
    renderCountries();
  });
}

if (token()) open();
else signIn("");
