// The dashboard's tables and lists, drawn from the watched objects. Every
// value goes in through textContent (never innerHTML): object names and
// event messages come from the fleet and must not become markup.

import {
  HEALTH,
  formatAge,
  formatBitrate,
  formatPercent,
  isFit,
  parseTime,
  pooledHitRatio,
  recentEvents,
  servingSites,
  siteHealth,
  workloadSummary,
} from "./model.js";

export const EVENT_COUNT = 20;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A cell showing the age of a timestamp, refreshed by updateAges(). */
function ageCell(tag, timestamp, nowMs) {
  const ms = parseTime(timestamp);
  return h(tag, { class: "age", "data-time": ms ?? "", title: timestamp ?? "never" }, formatAge(ms, nowMs));
}

/** Rewrites every age cell's text for the current time. */
export function updateAges(root, nowMs) {
  for (const cell of root.querySelectorAll(".age[data-time]")) {
    const ms = cell.dataset.time === "" ? null : Number(cell.dataset.time);
    const text = formatAge(ms, nowMs);
    if (cell.textContent !== text) cell.textContent = text;
  }
}

function phaseBadge(phase) {
  return h("span", { class: `badge phase-${(phase ?? "none").toLowerCase()}` }, phase ?? "—");
}

function workloadsCell(node) {
  const cell = h("td", { class: "workloads" });
  const items = workloadSummary(node);
  if (items.length === 0) cell.append("—");
  for (const w of items) {
    const mark = w.ready === true ? "ready" : w.ready === false ? "not ready" : "";
    const cls = w.ready === true ? "ok" : w.ready === false ? "bad" : "unknown";
    cell.append(h("span", { class: `workload ${cls}`, title: mark }, `${w.name}: ${w.state}`, mark ? ` (${mark})` : null));
  }
  return cell;
}

function nodeRow(node, siteNodes, nowMs) {
  const status = node.status ?? {};
  const fit = isFit(node, siteNodes);
  const cache = status.cache ?? {};
  const hits = cache.requests ? `${cache.hits ?? 0} of ${cache.requests} requests` : "no requests yet";
  return h("tr", { "data-node": node.metadata.name, "data-phase": status.phase ?? "", "data-site": node.spec.site,
                   "data-fit": String(fit) },
    h("td", { class: "name" }, node.metadata.name),
    h("td", {}, node.spec.site),
    h("td", { title: status.message ?? null }, phaseBadge(status.phase)),
    ageCell("td", status.lastHeartbeat, nowMs),
    h("td", { class: "hub" }, status.hub ?? "—"),
    workloadsCell(node),
    h("td", { class: "num", title: hits }, formatPercent(cache.hitRatio)),
    h("td", {}, node.spec.draining ? h("span", { class: "badge draining" }, "draining") : ""),
  );
}

function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
}

/** The node table's body; only the selected site's nodes when one is selected. */
export function renderNodes(tbody, { nodes, bySite, selected, nowMs }) {
  const shown = nodes
    .filter((n) => !selected || n.spec.site === selected)
    .sort((a, b) => a.spec.site.localeCompare(b.spec.site) || a.metadata.name.localeCompare(b.metadata.name));
  const rows = shown.map((n) => nodeRow(n, bySite.get(n.spec.site) ?? [], nowMs));
  tbody.replaceChildren(...(rows.length ? rows : [emptyRow(8, selected ? `No nodes in ${selected}.` : "No nodes yet.")]));
}

function hostnamesCell(hostnames) {
  const shown = hostnames.slice(0, 3);
  const more = hostnames.length - shown.length;
  return h("td", { class: "hostnames", title: hostnames.join("\n") },
    ...shown.flatMap((name) => [h("span", { class: "hostname" }, name), " "]),
    more > 0 ? h("span", { class: "more" }, `+${more} more`) : null);
}

function domainRow(domain, { sites, bySite, rates, nowMs }) {
  const serving = servingSites(domain, sites);
  const nodes = serving.names.flatMap((name) => bySite.get(name) ?? []);
  const ratio = domain.status?.hitRatio ?? pooledHitRatio(nodes);
  const bandwidth = rates.total(nodes.map((n) => n.metadata.name), nowMs);
  const servingText = serving.names.length ? serving.names.join(", ") : "none";
  const servingTitle = serving.reported ? "reported by the cloud" : "chosen by the domain's site selector";
  return h("tr", { "data-domain": domain.metadata.name },
    h("td", { class: "name" }, domain.metadata.name),
    hostnamesCell(domain.spec.hostnames ?? []),
    h("td", {}, domain.spec.routing?.policy ?? "geo"),
    h("td", { class: serving.reported ? "" : "derived", title: servingTitle }, servingText),
    h("td", { class: "num" }, formatPercent(ratio)),
    h("td", { class: "num" }, formatBitrate(bandwidth)),
  );
}

/** The domain table's body. `rates` is the RateTracker of node bytes served. */
export function renderDomains(tbody, state) {
  const rows = [...state.domains]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((d) => domainRow(d, state));
  tbody.replaceChildren(...(rows.length ? rows : [emptyRow(6, "No domains yet.")]));
}

function eventItem(event, nowMs) {
  const spec = event.spec ?? {};
  const object = spec.involvedObject ? `${spec.involvedObject.kind.toLowerCase()}/${spec.involvedObject.name}` : "";
  const type = spec.type ?? "Normal";
  return h("li", { class: `event ${type.toLowerCase()}`, "data-reason": spec.reason, "data-type": type },
    h("div", { class: "event-head" },
      h("span", { class: "reason" }, spec.reason ?? ""),
      h("span", { class: "object" }, object),
      spec.count > 1 ? h("span", { class: "count" }, `×${spec.count}`) : null,
      ageCell("span", spec.lastTimestamp, nowMs)),
    spec.message ? h("div", { class: "message" }, spec.message) : null);
}

/** The newest events first. */
export function renderEvents(list, { events, nowMs }) {
  const items = recentEvents(events, EVENT_COUNT).map((e) => eventItem(e, nowMs));
  list.replaceChildren(...(items.length ? items : [h("p", { class: "empty" }, "No events in the last hour.")]));
}

/** The header's one-line fleet summary. */
export function renderSummary(element, { sites, nodes, bySite, domains }) {
  const ready = nodes.filter((n) => n.status?.phase === "Ready").length;
  const healthy = sites.filter((s) => siteHealth(s, bySite.get(s.metadata.name) ?? []).health === HEALTH.healthy);
  const parts = [
    `${sites.length} site${sites.length === 1 ? "" : "s"} (${healthy.length} healthy)`,
    `${nodes.length} node${nodes.length === 1 ? "" : "s"} (${ready} Ready)`,
    `${domains.length} domain${domains.length === 1 ? "" : "s"}`,
  ];
  element.textContent = parts.join(" · ");
}
