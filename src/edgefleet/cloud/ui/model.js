// The dashboard's decisions, as pure functions of API objects: site health,
// node fitness, label selectors, ages, bandwidth. No DOM and no network here,
// so the tests run these in node and the views only draw what they return.

export const HEALTH = Object.freeze({
  healthy: "healthy", // every node Ready and fit
  degraded: "degraded", // some nodes Ready
  down: "down", // no node Ready (or no node at all)
  inactive: "inactive", // the site is switched off (status.active false)
});

/** Whether a node is Ready according to its status. */
export function isReady(node) {
  return node?.status?.phase === "Ready";
}

/** Votes about `name` from its peers: {healthy, unhealthy}. */
export function votesAbout(name, nodes) {
  const tally = { healthy: 0, unhealthy: 0 };
  for (const peer of nodes) {
    const vote = peer?.status?.peerVotes?.[name];
    if (!vote || peer.metadata.name === name) continue;
    if (vote.healthy) tally.healthy += 1;
    else tally.unhealthy += 1;
  }
  return tally;
}

/**
 * Fit for traffic: Ready, not draining, no workload reporting not-ready, and
 * not voted unhealthy by most of the peers that voted about it.
 */
export function isFit(node, siteNodes) {
  if (!isReady(node) || node.spec?.draining || Object.keys(node.status?.drains ?? {}).length > 0) return false;
  const workloads = Object.values(node.status?.workloads ?? {});
  if (workloads.some((w) => w.ready === false)) return false;
  const votes = votesAbout(node.metadata.name, siteNodes);
  return votes.unhealthy <= votes.healthy;
}

/** The nodes of each site, by site name. */
export function nodesBySite(nodes) {
  const out = new Map();
  for (const node of nodes) {
    const site = node.spec?.site ?? "";
    if (!out.has(site)) out.set(site, []);
    out.get(site).push(node);
  }
  return out;
}

const numberOrNull = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

/**
 * {health, total, ready, fit, load, loadGbps, reported} of one site. `fit` and `total` are
 * Site.status.healthyNodes and totalNodes, which the cloud's site status controller writes by
 * the GSLB's own health rule (so the map, `edgefleet get sites` and DNS answers agree), and
 * load/loadGbps its measured load; `reported` says so. Only while the status has no counts (an
 * older cloud, or before its first write) are they computed here from the nodes.
 */
export function siteHealth(site, siteNodes) {
  const status = site.status ?? {};
  const ready = siteNodes.filter(isReady).length;
  const reported = numberOrNull(status.healthyNodes) !== null && numberOrNull(status.totalNodes) !== null;
  const total = reported ? status.totalNodes : siteNodes.length;
  const fit = reported ? status.healthyNodes : siteNodes.filter((n) => isFit(n, siteNodes)).length;
  let health;
  if (status.active === false) health = HEALTH.inactive;
  else if (reported ? fit === 0 : ready === 0) health = HEALTH.down;
  else if (fit === total) health = HEALTH.healthy;
  else health = HEALTH.degraded;
  return { health, total, ready, fit, load: numberOrNull(status.load), loadGbps: numberOrNull(status.loadGbps), reported };
}

/** Bytes a second a Domain sent to users over its window (Domain.status.bytes / windowSeconds), or null. */
export function domainBandwidth(status) {
  const bytes = numberOrNull(status?.bytes);
  const window = numberOrNull(status?.windowSeconds);
  return bytes === null || !window ? null : bytes / window;
}

/** A site's measured load as "12.5% (1.2 Gbit/s)", or null before the cloud measured it. */
export function formatLoad(stats) {
  if (stats.load === null && stats.loadGbps === null) return null;
  const gbps = stats.loadGbps === null ? "" : ` (${formatBitrate((stats.loadGbps * 1e9) / 8)})`;
  return `${formatPercent(stats.load)}${gbps}`;
}

/** Parses an RFC 3339 timestamp to epoch milliseconds, or null. */
export function parseTime(text) {
  if (!text) return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

/** "3s ago", "5m ago", "2h ago", "4d ago"; "—" without a time. */
export function formatAge(thenMs, nowMs) {
  if (thenMs === null || thenMs === undefined) return "—";
  const seconds = Math.max(0, Math.floor((nowMs - thenMs) / 1000));
  if (seconds < 2) return "just now";
  if (seconds < 120) return `${seconds}s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

/** A ratio 0..1 as "87.5%", or "—". */
export function formatPercent(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "—";
  return `${(ratio * 100).toFixed(1)}%`;
}

/** Bytes per second as bits per second with a unit ("12.4 Mbit/s"). */
export function formatBitrate(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return "—";
  let value = bytesPerSecond * 8;
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

// Label selectors, the grammar of the API (edgefleet.api.selectors):
// "a=b, c!=d, e in (f,g), h notin (i), j, !k".
const REQUIREMENT = /^(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?$/;

function splitRequirements(text) {
  const parts = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "(") depth += 1;
    if (ch === ")") depth -= 1;
    if (ch === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += ch;
  }
  parts.push(current);
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

function requirementMatches(text, labels) {
  const m = REQUIREMENT.exec(text);
  if (!m) return false; // the API validated it; an unknown form selects nothing
  const [, not, key, op, value, setOp, setText] = m;
  const has = Object.hasOwn(labels, key);
  if (op === "=" || op === "==") return has && labels[key] === value;
  if (op === "!=") return !has || labels[key] !== value;
  if (setOp) {
    const values = setText.split(",").map((v) => v.trim());
    return setOp === "in" ? has && values.includes(labels[key]) : !has || !values.includes(labels[key]);
  }
  return not ? !has : has;
}

/** Whether `labels` match the selector text (empty selects everything). */
export function selectorMatches(text, labels) {
  return splitRequirements(text ?? "").every((req) => requirementMatches(req, labels ?? {}));
}

/**
 * The sites serving a domain: status.servingSites when the cloud reported
 * them, else the sites its selector picks (`reported` says which).
 */
export function servingSites(domain, sites) {
  const reported = domain.status?.servingSites;
  if (Array.isArray(reported)) return { names: [...reported], reported: true };
  const names = sites.filter((s) => selectorMatches(domain.spec?.sites, s.metadata.labels)).map((s) => s.metadata.name);
  return { names: names.sort(), reported: false };
}

/** Samples older than this do not count towards a rate (the node went quiet). */
export const RATE_STALE_MS = 120_000;

/**
 * Bytes-served rate per node from successive status updates: each update
 * brings a counter (status.cache.bytesServed) and the time it was measured
 * (status.lastHeartbeat, else when it arrived). A counter that goes down
 * means the cache restarted: that sample starts over.
 */
export class RateTracker {
  constructor() {
    this.samples = new Map(); // node name -> {bytes, at, rate, rateAt}
  }

  observe(node, receivedMs) {
    const bytes = node?.status?.cache?.bytesServed;
    if (typeof bytes !== "number") return;
    const at = parseTime(node.status.lastHeartbeat) ?? receivedMs;
    const name = node.metadata.name;
    const last = this.samples.get(name);
    if (last && at <= last.at) return; // the same report seen again (another field changed)
    let rate = last?.rate ?? null;
    if (last && bytes >= last.bytes) rate = (bytes - last.bytes) / ((at - last.at) / 1000);
    else if (last) rate = null;
    this.samples.set(name, { bytes, at, rate, rateAt: receivedMs });
  }

  forget(name) {
    this.samples.delete(name);
  }

  /** Bytes per second of one node, or null when unknown or stale. */
  rate(name, nowMs) {
    const sample = this.samples.get(name);
    if (!sample || sample.rate === null || nowMs - sample.rateAt > RATE_STALE_MS) return null;
    return sample.rate;
  }

  /** Sum of the known rates of `names`; null when none is known. */
  total(names, nowMs) {
    let sum = null;
    for (const name of names) {
      const rate = this.rate(name, nowMs);
      if (rate !== null) sum = (sum ?? 0) + rate;
    }
    return sum;
  }
}

/** Where a node's answers came from over its cache's window (Node.status.cache), as hover text. */
export function nodeTrafficText(cache) {
  if (!cache || cache.windowSeconds === undefined) return "no traffic figures yet";
  const n = (value) => value ?? 0;
  return `last ${cache.windowSeconds}s: ${n(cache.clientRequests)} client requests, ` +
    `${n(cache.tierRequests)} from other caches; served from here ${n(cache.servedLocal)}, ` +
    `from site peers ${n(cache.servedPeer)}, from parents ${n(cache.servedParent)}, ` +
    `from the origin ${n(cache.servedOrigin)}; ${n(cache.originRequests)} origin requests`;
}

/** What a Domain's offload is made of (Domain.status, written by the cloud), as hover text. */
export function domainTrafficText(status) {
  if (!status || status.requests === undefined || status.requests === null) return "no traffic figures yet";
  return `last ${status.windowSeconds ?? "?"}s: ${status.requests} user requests, ` +
    `${status.originRequests ?? 0} sent to the origin; byte offload ${formatPercent(status.byteOffload ?? null)}`;
}

/** The newest `count` events, by lastTimestamp then creation. */
export function recentEvents(events, count) {
  const when = (e) => parseTime(e.spec?.lastTimestamp) ?? parseTime(e.metadata?.creationTimestamp) ?? 0;
  return [...events].sort((a, b) => when(b) - when(a)).slice(0, count);
}

/**
 * Node workloads as "cache Running ✓" lines: [{name, state, ready, revision}]. With `revisions`
 * (from workloadRevisions), `revision` says which one the node runs: {label, hash, state}
 * where state is "current", "update" (the rollout's target), "other" or "unknown".
 */
export function workloadSummary(node, revisions = null) {
  return Object.entries(node.status?.workloads ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, w]) => ({
      name, state: w.state ?? "—", ready: w.ready ?? null,
      revision: revisions ? runningRevision(w.revision, revisions.get(name)) : null,
    }));
}

// Rollouts (edgefleet.api.rollouts): Workload.status says which revision is current and where a
// rollout goes; WorkloadRevision objects give the revisions their numbers; Node.status.drains
// holds "workload/<name>" while a rollout has the node out of GSLB answers.

export const ROLLOUT_ACTIVE = Object.freeze(["Progressing", "Paused", "Analyzing", "RollingBack"]);
const DRAIN_PREFIX = "workload/";

/** "3" for a revision number, else the first 8 characters of its hash, else "—". */
export function revisionLabel(number, hash) {
  if (number !== null && number !== undefined) return String(number);
  return hash ? hash.slice(0, 8) : "—";
}

/**
 * Per workload, what the dashboard knows of its revisions: name -> {numbers (hash -> number),
 * current, update (hashes), currentNumber, updateNumber}. Revisions of a namesake (another uid)
 * are left out.
 */
export function workloadRevisions(workloads, revisions) {
  const out = new Map();
  for (const w of workloads) {
    const status = w.status ?? {};
    const numbers = new Map();
    if (status.currentRevision && status.currentRevisionNumber) numbers.set(status.currentRevision, status.currentRevisionNumber);
    if (status.updateRevision && status.updateRevisionNumber) numbers.set(status.updateRevision, status.updateRevisionNumber);
    out.set(w.metadata.name, { numbers, current: status.currentRevision ?? null, update: status.updateRevision ?? null,
                               uid: w.metadata.uid ?? "" });
  }
  for (const r of revisions) {
    const spec = r.spec ?? {};
    const entry = out.get(spec.workload);
    if (!entry || (entry.uid && spec.workloadUid && entry.uid !== spec.workloadUid)) continue;
    if (spec.revision && spec.number) entry.numbers.set(spec.revision, spec.number);
  }
  return out;
}

/** {label, hash, state} of the revision a node reports for one workload. */
export function runningRevision(hash, known) {
  if (!hash) return { label: "—", hash: null, state: "unknown" };
  const number = known?.numbers.get(hash) ?? null;
  let state = "other";
  if (known && hash === known.update && known.update !== known.current) state = "update";
  else if (known && hash === known.current) state = "current";
  return { label: revisionLabel(number, hash), hash, state };
}

/**
 * The drains the cloud holds on a node (status.drains; the GSLB leaves it out while any is held):
 * [{key, workload (the rollout's workload, or null for another kind of drain), since}], by key.
 */
export function cloudDrains(node) {
  return Object.entries(node?.status?.drains ?? {})
    .map(([key, since]) => ({ key, workload: key.startsWith(DRAIN_PREFIX) ? key.slice(DRAIN_PREFIX.length) : null,
                              since }))
    .sort((a, b) => a.key.localeCompare(b.key));
}

/** What a step of spec.strategy.steps does, briefly. */
export function describeStep(step) {
  if (!step) return "";
  if (step.nodes !== undefined && step.nodes !== null) return `${step.nodes} node${step.nodes === 1 ? "" : "s"}`;
  if (step.percent !== undefined && step.percent !== null) return `${step.percent}% of the nodes`;
  if (step.selector) return `nodes matching ${step.selector}`;
  if (step.pause) return step.pause.seconds ? `pause ${step.pause.seconds}s` : "pause until resumed";
  return "";
}

/**
 * A Workload's rollout as the dashboard shows it: {current, update, changing (a new revision is
 * on its way), phase (null without a rollout), active, stepText, updated, desired, available,
 * ratio (updated / desired or null), paused, message, sites: [{name, desired, updated, ready,
 * available, unavailable, inFlight: [{node, phase, since}]}]}. In-flight nodes are placed by
 * `siteOf` (node name -> site).
 */
export function workloadRollout(workload, siteOf = new Map()) {
  const status = workload.status ?? {};
  const rollout = status.rollout ?? null;
  const steps = workload.spec?.strategy?.steps ?? [];
  const active = rollout !== null && ROLLOUT_ACTIVE.includes(rollout.phase);
  const current = revisionLabel(status.currentRevisionNumber, status.currentRevision);
  const target = active ? revisionLabel(rollout.targetNumber, rollout.target)
    : revisionLabel(status.updateRevisionNumber, status.updateRevision);
  let stepText = "";
  if (active && steps.length > 0) {
    stepText = rollout.step < steps.length
      ? `step ${rollout.step + 1}/${steps.length}: ${describeStep(steps[rollout.step])}`
      : `after step ${steps.length}/${steps.length}: the remaining nodes`;
  }
  const inFlight = new Map();
  if (active) {
    for (const [node, move] of Object.entries(rollout.nodes ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
      const site = siteOf.get(node) ?? "";
      if (!inFlight.has(site)) inFlight.set(site, []);
      inFlight.get(site).push({ node, phase: move.phase, since: move.since ?? null });
    }
  }
  const siteNames = new Set([...Object.keys(status.sites ?? {}), ...inFlight.keys()]);
  const sites = [...siteNames].sort().map((name) => ({
    name, desired: 0, updated: 0, ready: 0, available: 0, unavailable: 0,
    ...(status.sites?.[name] ?? {}), inFlight: inFlight.get(name) ?? [],
  }));
  const desired = status.desiredCount ?? null;
  const updated = status.updatedCount ?? null;
  return {
    current, update: target, changing: active || (Boolean(status.updateRevision) && status.updateRevision !== status.currentRevision),
    phase: rollout?.phase ?? null, active, stepText, updated, desired, available: status.availableCount ?? null,
    ratio: desired ? (updated ?? 0) / desired : null, paused: Boolean(workload.spec?.paused),
    message: rollout?.message ?? "", waiting: active ? [...(rollout.waiting ?? [])] : [], sites,
  };
}

/**
 * The map's view: lon/lat bounds around the sites, padded, widened to the
 * drawing's aspect ratio so degrees stay square; the whole world without sites.
 */
export function fitBounds(points, aspect, minLonSpan = 40) {
  if (points.length === 0) return { west: -180, east: 180, south: -90, north: 90 };
  const lons = points.map((p) => p.lon);
  const lats = points.map((p) => p.lat);
  let west = Math.min(...lons);
  let east = Math.max(...lons);
  let south = Math.min(...lats);
  let north = Math.max(...lats);
  const padLon = Math.max((east - west) * 0.25, 4);
  const padLat = Math.max((north - south) * 0.25, 3);
  [west, east, south, north] = [west - padLon, east + padLon, south - padLat, north + padLat];
  let lonSpan = Math.max(east - west, minLonSpan, (north - south) * aspect);
  lonSpan = Math.min(lonSpan, 360);
  const latSpan = Math.min(lonSpan / aspect, 180);
  const cLon = (west + east) / 2;
  const cLat = Math.min(Math.max((south + north) / 2, -90 + latSpan / 2), 90 - latSpan / 2);
  return { west: cLon - lonSpan / 2, east: cLon + lonSpan / 2, south: cLat - latSpan / 2, north: cLat + latSpan / 2 };
}

/** Days before notAfter at which a certificate shows as expiring (the cloud's Warning Event uses 14 too). */
export const CERT_WARNING_DAYS = 14;
const DAY_MS = 86_400_000;
const CERT_RANK = { expired: 0, expiring: 1, invalid: 2, unknown: 3, ok: 4 };

/**
 * One row per Certificate: {name, domains, dnsNames, notAfterMs, daysLeft, state, message}. `state` is
 * "expired", "expiring" (within CERT_WARNING_DAYS), "ok", "invalid" (the controller wrote a message
 * and no validity) or "unknown" (not inspected yet). Everything comes from Certificate.status, which
 * the cloud's certificate controller writes; viewers never see the key, and this never reads it.
 */
export function certificateRow(certificate, nowMs) {
  const status = certificate.status ?? {};
  const notAfterMs = parseTime(status.notAfter);
  const daysLeft = notAfterMs === null ? null : Math.floor((notAfterMs - nowMs) / DAY_MS);
  let state;
  if (notAfterMs === null) state = status.message ? "invalid" : "unknown";
  else if (notAfterMs <= nowMs) state = "expired";
  else if (notAfterMs - nowMs <= CERT_WARNING_DAYS * DAY_MS) state = "expiring";
  else state = "ok";
  return {
    name: certificate.metadata.name, domains: [...(status.domains ?? [])].sort(),
    dnsNames: [...(status.dnsNames ?? [])], notAfterMs, daysLeft, state, message: status.message ?? "",
  };
}

/** Rows for every Certificate, the most urgent first (expired, expiring, invalid, unknown, then by expiry). */
export function certificateRows(certificates, nowMs) {
  return certificates.map((c) => certificateRow(c, nowMs)).sort((a, b) =>
    CERT_RANK[a.state] - CERT_RANK[b.state] || (a.notAfterMs ?? Infinity) - (b.notAfterMs ?? Infinity)
    || a.name.localeCompare(b.name));
}

/** "in 41 days", "today", "expired 3 days ago", or "—" for an unknown expiry. */
export function expiryText(row) {
  if (row.daysLeft === null) return "—";
  if (row.state === "expired") {
    const days = -row.daysLeft - 1;
    return days === 0 ? "expired today" : `expired ${days} day${days === 1 ? "" : "s"} ago`;
  }
  if (row.daysLeft === 0) return "today";
  return `in ${row.daysLeft} day${row.daysLeft === 1 ? "" : "s"}`;
}
