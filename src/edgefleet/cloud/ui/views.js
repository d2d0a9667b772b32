// The dashboard's tables and lists, drawn from the watched objects. Every
// value goes in through textContent (never innerHTML): object names and
// event messages come from the fleet and must not become markup.

import {
  HEALTH,
  certificateRows,
  cloudDrains,
  expiryText,
  formatAge,
  formatBitrate,
  formatPercent,
  isFit,
  parseTime,
  domainTrafficText,
  nodeTrafficText,
  recentEvents,
  servingSites,
  siteHealth,
  domainBandwidth,
  workloadRollout,
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

const REVISION_TITLES = {
  current: "the workload's current revision",
  update: "the revision its rollout moves to",
  other: "neither the current nor the update revision (pinned, or not moved yet)",
  unknown: "the agent reports no revision",
};

function revisionBadge(revision) {
  if (!revision || revision.hash === null) return null;
  return h("span", { class: `rev rev-${revision.state}`, "data-revision": revision.label, "data-state": revision.state,
                     title: `revision ${revision.hash}: ${REVISION_TITLES[revision.state]}` }, `rev ${revision.label}`);
}

function workloadsCell(node, revisions) {
  const cell = h("td", { class: "workloads" });
  const items = workloadSummary(node, revisions);
  if (items.length === 0) cell.append("—");
  for (const w of items) {
    const mark = w.ready === true ? "ready" : w.ready === false ? "not ready" : "";
    const cls = w.ready === true ? "ok" : w.ready === false ? "bad" : "unknown";
    cell.append(h("span", { class: `workload ${cls}`, title: mark, "data-workload": w.name },
      `${w.name}: ${w.state}`, mark ? ` (${mark})` : null, revisionBadge(w.revision)));
  }
  return cell;
}

function drainingCell(node, nowMs) {
  const cell = h("td", { class: "drains" });
  if (node.spec.draining) cell.append(h("span", { class: "badge draining", title: "spec.draining: by hand" }, "draining"));
  for (const drain of cloudDrains(node)) {
    const since = formatAge(parseTime(drain.since), nowMs);
    const text = drain.workload ? `rollout: ${drain.workload}` : drain.key;
    const why = drain.workload ? `drained by the rollout of workload ${drain.workload}` : `drained by the cloud (${drain.key})`;
    cell.append(h("span", { class: "badge draining rollout", "data-drain": drain.workload ?? drain.key,
                            title: `${why}, since ${drain.since ?? "?"} (${since}); out of GSLB answers` }, text));
  }
  return cell;
}

function nodeRow(node, siteNodes, nowMs, revisions) {
  const status = node.status ?? {};
  const fit = isFit(node, siteNodes);
  const cache = status.cache ?? {};
  return h("tr", { "data-node": node.metadata.name, "data-phase": status.phase ?? "", "data-site": node.spec.site,
                   "data-fit": String(fit) },
    h("td", { class: "name" }, node.metadata.name),
    h("td", {}, node.spec.site),
    h("td", { title: status.message ?? null }, phaseBadge(status.phase)),
    ageCell("td", status.lastHeartbeat, nowMs),
    h("td", { class: "hub" }, status.hub ?? "—"),
    workloadsCell(node, revisions),
    h("td", { class: "num", title: nodeTrafficText(cache) }, formatPercent(cache.offload ?? null)),
    drainingCell(node, nowMs),
  );
}

function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
}

/** The node table's body; only the selected site's nodes when one is selected. */
export function renderNodes(tbody, { nodes, bySite, selected, nowMs, revisions = null }) {
  const shown = nodes
    .filter((n) => !selected || n.spec.site === selected)
    .sort((a, b) => a.spec.site.localeCompare(b.spec.site) || a.metadata.name.localeCompare(b.metadata.name));
  const rows = shown.map((n) => nodeRow(n, bySite.get(n.spec.site) ?? [], nowMs, revisions));
  tbody.replaceChildren(...(rows.length ? rows : [emptyRow(8, selected ? `No nodes in ${selected}.` : "No nodes yet.")]));
}

function progressBar(ratio) {
  const percent = ratio === null ? 0 : Math.round(Math.min(Math.max(ratio, 0), 1) * 100);
  const bar = h("span", { class: "bar" }, h("span", { class: "fill" }));
  bar.firstChild.style.width = `${percent}%`; // a CSSOM write: allowed by the style-src 'self' policy
  return bar;
}

function revisionCell(view) {
  const cell = h("td", { class: "revision" });
  cell.append(h("span", { class: "rev rev-current", title: "current revision: what the nodes run" }, view.current));
  if (view.changing && view.update !== view.current) {
    cell.append(" → ", h("span", { class: "rev rev-update", title: "update revision: spec.template" }, view.update));
  }
  return cell;
}

function rolloutCell(view) {
  const cell = h("td", { class: "rollout" });
  if (view.phase === null) cell.append(h("span", { class: "muted" }, "—"));
  else cell.append(h("span", { class: `badge rollout-${view.phase.toLowerCase()}` }, view.phase));
  if (view.paused) cell.append(" ", h("span", { class: "badge paused", title: "spec.paused: `edgefleet rollout resume`" }, "paused"));
  if (view.stepText) cell.append(h("div", { class: "step" }, view.stepText));
  if (view.message) cell.append(h("div", { class: "message", title: view.message }, view.message));
  if (view.waiting.length) {
    cell.append(h("div", { class: "waiting", title: "not Ready: they move when they return" },
      `waiting: ${view.waiting.join(", ")}`));
  }
  return cell;
}

function progressCell(view) {
  const cell = h("td", { class: "progress" });
  if (view.desired === null) {
    cell.append(h("span", { class: "muted" }, "—"));
    return cell;
  }
  cell.append(progressBar(view.ratio),
    h("span", { class: "count" }, `${view.updated ?? 0}/${view.desired} updated`),
    view.available !== null ? h("span", { class: "muted" }, ` · ${view.available} available`) : null);
  return cell;
}

function sitesCell(view, nowMs) {
  const cell = h("td", { class: "sites" });
  if (view.sites.length === 0) cell.append(h("span", { class: "muted" }, "—"));
  for (const site of view.sites) {
    const moving = site.inFlight.map((m) => `${m.node} ${m.phase} (${formatAge(parseTime(m.since), nowMs)})`);
    const title = [`${site.name}: ${site.updated}/${site.desired} updated, ${site.ready} ready, `
                   + `${site.available} available, ${site.unavailable} unavailable`, ...moving].join("\n");
    const chip = h("span", { class: "site-chip", "data-site": site.name, "data-updated": site.updated,
                             "data-desired": site.desired, title },
      h("span", { class: "site-name" }, site.name || "?"), ` ${site.updated}/${site.desired}`);
    for (const m of site.inFlight) {
      chip.append(h("span", { class: "in-flight", "data-node": m.node, "data-phase": m.phase }, ` ${m.node} ${m.phase}`));
    }
    cell.append(chip);
  }
  return cell;
}

function workloadRow(workload, siteOf, nowMs) {
  const view = workloadRollout(workload, siteOf);
  return h("tr", { "data-workload": workload.metadata.name, "data-phase": view.phase ?? "",
                   "data-current": view.current, "data-update": view.update,
                   "data-updated": view.updated ?? "", "data-desired": view.desired ?? "" },
    h("td", { class: "name" }, workload.metadata.name),
    revisionCell(view),
    rolloutCell(view),
    progressCell(view),
    sitesCell(view, nowMs),
  );
}

/** The workload table's body: revision, rollout and progress of every Workload. */
export function renderWorkloads(tbody, { workloads, nodes, nowMs }) {
  const siteOf = new Map(nodes.map((n) => [n.metadata.name, n.spec?.site ?? ""]));
  const rows = [...workloads]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((w) => workloadRow(w, siteOf, nowMs));
  tbody.replaceChildren(...(rows.length ? rows : [emptyRow(5, "No workloads yet.")]));
}

function hostnamesCell(hostnames) {
  const shown = hostnames.slice(0, 3);
  const more = hostnames.length - shown.length;
  return h("td", { class: "hostnames", title: hostnames.join("\n") },
    ...shown.flatMap((name) => [h("span", { class: "hostname" }, name), " "]),
    more > 0 ? h("span", { class: "more" }, `+${more} more`) : null);
}

function domainRow(domain, { sites }) {
  const serving = servingSites(domain, sites);
  const bandwidth = domainBandwidth(domain.status); // Domain.status, written by the cloud: not recomputed here
  const window = domain.status?.windowSeconds;
  const servingText = serving.names.length ? serving.names.join(", ") : "none";
  const servingTitle = serving.reported ? "reported by the cloud" : "chosen by the domain's site selector";
  return h("tr", { "data-domain": domain.metadata.name },
    h("td", { class: "name" }, domain.metadata.name),
    hostnamesCell(domain.spec.hostnames ?? []),
    h("td", {}, domain.spec.routing?.policy ?? "geo"),
    h("td", { class: serving.reported ? "" : "derived", title: servingTitle }, servingText),
    h("td", { class: "num", title: domainTrafficText(domain.status) }, formatPercent(domain.status?.offload ?? null)),
    h("td", { class: "num" }, formatPercent(domain.status?.byteOffload ?? null)),
    h("td", { class: "num", title: window ? `to users, over the last ${window}s (Domain.status)` : "no figures yet" },
      formatBitrate(bandwidth)),
  );
}

/** The domain table's body: every figure from Domain.status (the cloud's domain status controller). */
export function renderDomains(tbody, state) {
  const rows = [...state.domains]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((d) => domainRow(d, state));
  tbody.replaceChildren(...(rows.length ? rows : [emptyRow(7, "No domains yet.")]));
}

const CERT_TITLES = {
  expired: "past notAfter: clients get a certificate error",
  expiring: "expires within 14 days: renew it (the cloud records a Warning Event)",
  invalid: "the certificate controller could not read it",
  unknown: "not inspected yet",
  ok: "valid",
};

function certificateRow(row) {
  const when = row.notAfterMs === null ? "" : new Date(row.notAfterMs).toISOString().slice(0, 10);
  return h("tr", { "data-certificate": row.name, "data-state": row.state },
    h("td", { class: "name" }, row.name),
    hostnamesCell(row.dnsNames),
    h("td", {}, row.domains.length ? row.domains.join(", ") : "none"),
    h("td", { title: when }, expiryText(row)),
    h("td", { title: row.message || CERT_TITLES[row.state] },
      h("span", { class: `badge cert-${row.state}` }, row.state)),
  );
}

/** The certificate table's body: expiry and users of every Certificate (Certificate.status), most urgent first. */
export function renderCertificates(tbody, { certificates = [], nowMs }) {
  const rows = certificateRows(certificates, nowMs).map(certificateRow);
  tbody.replaceChildren(...(rows.length ? rows : [emptyRow(5, "No certificates yet.")]));
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
export function renderSummary(element, { sites, nodes, bySite, domains, workloads = [] }) {
  const ready = nodes.filter((n) => n.status?.phase === "Ready").length;
  const healthy = sites.filter((s) => siteHealth(s, bySite.get(s.metadata.name) ?? []).health === HEALTH.healthy);
  const rolling = workloads.filter((w) => workloadRollout(w).active).length;
  const parts = [
    `${sites.length} site${sites.length === 1 ? "" : "s"} (${healthy.length} healthy)`,
    `${nodes.length} node${nodes.length === 1 ? "" : "s"} (${ready} Ready)`,
    `${domains.length} domain${domains.length === 1 ? "" : "s"}`,
  ];
  if (workloads.length) {
    parts.push(`${workloads.length} workload${workloads.length === 1 ? "" : "s"}`
               + (rolling ? ` (${rolling} rolling out)` : ""));
  }
  element.textContent = parts.join(" · ");
}
