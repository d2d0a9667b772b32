// The dashboard's entry point: login, one watch stream for every kind shown, and drawing.
//
// The token lives in sessionStorage only (gone when the tab closes), is
// checked with a GET before the dashboard opens, and goes with every API
// call. `/ui#token=<token>` signs in directly (the fragment never reaches a
// server) and is then removed from the address bar. All kinds come over ONE
// multiplexed watch (api.js MultiWatch): a browser keeps six HTTP/1.1
// connections per host, so one watch per kind would leave none free once the
// dashboard shows six kinds. Changes are coalesced: one redraw at most every
// REDRAW_MS, ages tick every second.

import { ApiError, Client, MultiWatch } from "./api.js";
import { renderMap } from "./map.js";
import { nodesBySite, workloadRevisions } from "./model.js";
import {
  renderCertificates, renderDomains, renderEvents, renderNodes, renderSummary, renderWorkloads, updateAges,
} from "./views.js";

const TOKEN_KEY = "edgefleet.token";
const KINDS = ["sites", "nodes", "domains", "events", "workloads", "workloadrevisions", "certificates"];
const REDRAW_MS = 150;
const FULL_REDRAW_EVERY_MS = 5000;

const $ = (selector) => document.querySelector(selector);

let session = null; // {client, watch, abort, timers, state, selected, world}

function loginMessage(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return `This token was not accepted: ${error.message}`;
    if (error.status === 403) return `This token may not read the fleet (use an admin or viewer token): ${error.message}`;
    return `The cloud answered ${error.status}: ${error.message}`;
  }
  return `Cannot reach the cloud: ${error.message}`;
}

function showLogin(message = "") {
  $("#dashboard").hidden = true;
  $("#logout-button").hidden = true;
  $("#connection").hidden = true;
  $("#summary").textContent = "";
  $("#login-view").hidden = false;
  const error = $("#login-error");
  error.textContent = message;
  error.hidden = !message;
  $("#login-token").focus();
}

async function signIn(token) {
  const client = new Client(token.trim());
  await client.check();
  sessionStorage.setItem(TOKEN_KEY, client.token);
  startSession(client);
}

function onLoginSubmit(event) {
  event.preventDefault();
  const token = $("#login-token").value;
  if (!token.trim()) {
    showLogin("Paste a token first.");
    return;
  }
  $("#login-button").disabled = true;
  signIn(token)
    .catch((error) => showLogin(loginMessage(error)))
    .finally(() => { $("#login-button").disabled = false; });
}

function logout(message = "") {
  if (session) {
    session.abort.abort();
    session.timers.forEach(clearInterval);
    clearTimeout(session.pending);
    session = null;
  }
  sessionStorage.removeItem(TOKEN_KEY);
  $("#login-token").value = "";
  showLogin(message);
}

function startSession(client) {
  const abort = new AbortController();
  session = { client, abort, watch: null, state: { state: "syncing", detail: "" }, selected: null, world: false,
              pending: null, timers: [] };
  session.watch = new MultiWatch(client, KINDS, { onChange, onState });
  session.watch.run(abort.signal);
  session.timers.push(setInterval(() => updateAges(document, Date.now()), 1000));
  session.timers.push(setInterval(redraw, FULL_REDRAW_EVERY_MS));
  $("#login-view").hidden = true;
  $("#dashboard").hidden = false;
  $("#logout-button").hidden = false;
  $("#connection").hidden = false;
  redraw();
}

function onChange() {
  if (!session) return;
  scheduleRedraw(); // figures come from the objects' status fields, which the cloud's controllers write
}

function onState(state, detail = "") {
  if (!session) return;
  if (state === "unauthorized") {
    logout(`The cloud no longer accepts this token: ${detail}`);
    return;
  }
  session.state = { state, detail };
  renderConnection();
}

function renderConnection() {
  const { state, detail } = session.state;
  const element = $("#connection");
  const text = { live: "Live", syncing: "Connecting…", retrying: "Reconnecting…" }[state];
  element.dataset.state = state;
  element.textContent = text;
  element.title = detail || text;
}

function scheduleRedraw() {
  if (session && session.pending === null) session.pending = setTimeout(redraw, REDRAW_MS);
}

function snapshot() {
  const objects = (kind) => [...session.watch.objects(kind).values()];
  const nodes = objects("nodes");
  const workloads = objects("workloads");
  return {
    sites: objects("sites"), nodes, domains: objects("domains"), events: objects("events"), workloads,
    certificates: objects("certificates"),
    revisions: workloadRevisions(workloads, objects("workloadrevisions")),
    bySite: nodesBySite(nodes), selected: session.selected, nowMs: Date.now(),
  };
}

function redraw() {
  if (!session) return;
  clearTimeout(session.pending);
  session.pending = null;
  const state = snapshot();
  if (state.selected && !state.sites.some((s) => s.metadata.name === state.selected)) session.selected = null;
  renderMap($("#map"), { ...state, world: session.world, onSelect: selectSite });
  renderNodes($("#nodes tbody"), state);
  renderWorkloads($("#workloads tbody"), state);
  renderDomains($("#domains tbody"), state);
  renderCertificates($("#certificates tbody"), state);
  renderEvents($("#events"), state);
  renderSummary($("#summary"), state);
  renderFilter();
}

function selectSite(name) {
  session.selected = session.selected === name ? null : name;
  redraw();
}

function renderFilter() {
  const filter = $("#nodes-filter");
  filter.hidden = !session.selected;
  $("#nodes-filter-site").textContent = session.selected ?? "";
}

function toggleWorld() {
  session.world = !session.world;
  $("#map-zoom").textContent = session.world ? "Fit sites" : "Whole world";
  redraw();
}

function tokenFromFragment() {
  const match = /^#token=([^&]+)/.exec(window.location.hash);
  if (!match) return null;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  return decodeURIComponent(match[1]);
}

function main() {
  $("#login-form").addEventListener("submit", onLoginSubmit);
  $("#logout-button").addEventListener("click", () => logout());
  $("#map-zoom").addEventListener("click", toggleWorld);
  $("#nodes-filter-clear").addEventListener("click", () => selectSite(session.selected));
  const token = tokenFromFragment() ?? sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showLogin();
    return;
  }
  signIn(token).catch((error) => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(loginMessage(error));
  });
}

main();
