// Talking to the cloud: authenticated GETs and one live watch for every kind shown.
//
// A browser keeps at most six HTTP/1.1 connections per host, and a watch
// holds one while it streams, so the dashboard watches all its kinds on ONE
// request: `GET /apis/edgefleet.io/v1/watch?kinds=sites:12,nodes:40,...`,
// read with fetch() as a stream of newline-delimited JSON events, each tagged
// with its kind's plural (`resource`); EventSource cannot send the
// Authorization header. A kind named without a revision is listed first: its
// objects as ADDED, then a BOOKMARK annotated edgefleet.io/initial-events-end,
// when the dashboard replaces its copy of that kind. When the stream ends (the
// server's watch timeout, a network cut, a cloud restart) it reconnects and
// resumes every kind from the last revision it saw, after an exponential
// backoff with jitter so that many open dashboards do not all return at once.
// A kind that gets 410 (its revision was compacted: events were lost) is the
// only one listed again.

export const API_ROOT = "/apis/edgefleet.io/v1";

/** An API answer other than 2xx: `status` is the HTTP code, `message` the Status message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function statusMessage(response) {
  try {
    const body = await response.json();
    return body.message || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

export class Client {
  constructor(token) {
    this.token = token;
  }

  headers() {
    return { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
  }

  /** GET a path of the API; the parsed JSON body, or an ApiError. */
  async get(path, signal) {
    const response = await fetch(path, { headers: this.headers(), signal, cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, await statusMessage(response));
    return response.json();
  }

  /** Checks the token: resolves when it may read, else an ApiError saying why not. */
  async check() {
    await this.get(API_ROOT);
  }
}

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const WATCH_SECONDS = 300;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Calls `onLine(text)` for each complete line of a streamed response body. */
async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) onLine(line);
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // closes the connection when onLine threw
  }
}

class Gone extends Error {}

export const INITIAL_EVENTS_END = "edgefleet.io/initial-events-end";
export const WATCH_PATH = `${API_ROOT}/watch`;

/**
 * Keeps a copy (name -> object) of the cloud's objects of several kinds, over one watch stream.
 * `onChange(plural, object|null)` after each change; `onState(state, detail)` with state
 * "syncing" (some kind not listed yet) | "live" | "retrying" | "unauthorized".
 */
export class MultiWatch {
  constructor(client, plurals, { onChange, onState }) {
    this.client = client;
    this.kinds = new Map(plurals.map((p) => [p, { objects: new Map(), revision: null, listing: null }]));
    this.onChange = onChange;
    this.onState = onState;
  }

  /** The current objects of one kind (a Map by name). */
  objects(plural) {
    return this.kinds.get(plural).objects;
  }

  /** `kinds=` of the next request: `plural:revision` to resume, `plural` to list (never listed, or 410). */
  query() {
    const entries = [...this.kinds].map(([plural, kind]) => (kind.revision === null ? plural : `${plural}:${kind.revision}`));
    return `kinds=${encodeURIComponent(entries.join(","))}&allowWatchBookmarks=true&timeoutSeconds=${WATCH_SECONDS}`;
  }

  synced() {
    return [...this.kinds.values()].every((kind) => kind.revision !== null);
  }

  async run(signal) {
    let backoff = BACKOFF_START_MS;
    while (!signal.aborted) {
      try {
        this.onState(this.synced() ? "live" : "syncing");
        const delivered = await this.stream(signal);
        if (delivered) backoff = BACKOFF_START_MS;
        continue; // a clean end (server timeout): reconnect at once, resuming every kind
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof Gone) continue; // relist the kinds that got 410, at once
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          this.onState("unauthorized", error.message);
          return;
        }
        this.onState("retrying", error.message);
      }
      await sleep(backoff * (0.5 + Math.random()), signal);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  /** Reads one watch stream to its end; true when it delivered any event. */
  async stream(signal) {
    for (const kind of this.kinds.values()) kind.listing = kind.revision === null ? new Map() : null;
    const response = await fetch(`${WATCH_PATH}?${this.query()}`, {
      headers: this.client.headers(), signal, cache: "no-store",
    });
    if (!response.ok) throw new ApiError(response.status, await statusMessage(response));
    let delivered = false;
    await readLines(response, (line) => {
      this.apply(JSON.parse(line));
      delivered = true;
    });
    return delivered;
  }

  apply(event) {
    const kind = this.kinds.get(event.resource);
    if (kind === undefined) return; // not asked for: ignore
    const obj = event.object ?? {};
    if (event.type === "ERROR") {
      if (obj.code === 410) {
        kind.revision = null; // list this kind again on the next stream; the others resume
        throw new Gone();
      }
      throw new ApiError(obj.code ?? 500, obj.message ?? "watch error");
    }
    if (kind.listing !== null) {
      this.applyListing(event.resource, kind, event, obj);
      return;
    }
    // A DELETED event carries the object as it was, with an older revision:
    // the position in the stream only moves forward.
    const revision = obj.metadata?.resourceVersion;
    if (revision !== undefined && Number(revision) > Number(kind.revision)) kind.revision = revision;
    if (event.type === "BOOKMARK") return;
    const name = obj.metadata.name;
    if (event.type === "DELETED") kind.objects.delete(name);
    else kind.objects.set(name, obj);
    this.onChange(event.resource, event.type === "DELETED" ? null : obj);
  }

  /** A listed kind's ADDED objects are gathered and replace the copy at the initial-events-end BOOKMARK. */
  applyListing(plural, kind, event, obj) {
    if (event.type === "ADDED") {
      kind.listing.set(obj.metadata.name, obj);
      return;
    }
    if (event.type !== "BOOKMARK" || obj.metadata?.annotations?.[INITIAL_EVENTS_END] !== "true") return;
    kind.objects = kind.listing;
    kind.listing = null;
    kind.revision = obj.metadata.resourceVersion;
    this.onChange(plural, null);
    if (this.synced()) this.onState("live");
  }
}
