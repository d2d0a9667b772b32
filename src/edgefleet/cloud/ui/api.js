// Talking to the cloud: authenticated GETs and one live watch per kind.
//
// A watch is a list (which gives the objects and the revision they were read
// at) followed by `?watch=true&resourceVersion=N`, read with fetch() as a
// stream of newline-delimited JSON events; EventSource cannot send the
// Authorization header. When the stream ends (the server's watch timeout,
// a network cut, a cloud restart) the watch reconnects from the last
// revision it saw, after an exponential backoff with jitter so that many
// open dashboards do not all return at once. A 410 (that revision was
// compacted) means events were lost: it lists again.

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

/**
 * Keeps `objects` (name -> object) equal to the cloud's objects of one kind.
 * `onChange(kind)` after each change, `onState(kind, state, detail)` with
 * state "syncing" | "live" | "retrying" | "unauthorized".
 */
export class KindWatch {
  constructor(client, plural, { onChange, onState }) {
    this.client = client;
    this.plural = plural;
    this.objects = new Map();
    this.revision = null;
    this.onChange = onChange;
    this.onState = onState;
  }

  async run(signal) {
    let backoff = BACKOFF_START_MS;
    while (!signal.aborted) {
      try {
        if (this.revision === null) await this.relist(signal);
        this.onState(this.plural, "live");
        const delivered = await this.stream(signal);
        if (delivered) backoff = BACKOFF_START_MS;
        continue; // a clean end (server timeout): reconnect at once from this.revision
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof Gone) { this.revision = null; continue; }
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          this.onState(this.plural, "unauthorized", error.message);
          return;
        }
        this.onState(this.plural, "retrying", error.message);
      }
      await sleep(backoff * (0.5 + Math.random()), signal);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  async relist(signal) {
    this.onState(this.plural, "syncing");
    const list = await this.client.get(`${API_ROOT}/${this.plural}`, signal);
    this.objects = new Map(list.items.map((o) => [o.metadata.name, o]));
    this.revision = list.metadata.resourceVersion;
    this.onChange(this.plural, null);
  }

  /** Reads one watch stream to its end; true when it delivered any event. */
  async stream(signal) {
    const query = `watch=true&allowWatchBookmarks=true&timeoutSeconds=${WATCH_SECONDS}`;
    const url = `${API_ROOT}/${this.plural}?${query}&resourceVersion=${encodeURIComponent(this.revision)}`;
    const response = await fetch(url, { headers: this.client.headers(), signal, cache: "no-store" });
    if (response.status === 410) throw new Gone();
    if (!response.ok) throw new ApiError(response.status, await statusMessage(response));
    let delivered = false;
    await readLines(response, (line) => {
      this.apply(JSON.parse(line));
      delivered = true;
    });
    return delivered;
  }

  apply(event) {
    const obj = event.object ?? {};
    if (event.type === "ERROR") {
      if (obj.code === 410) throw new Gone();
      throw new ApiError(obj.code ?? 500, obj.message ?? "watch error");
    }
    // A DELETED event carries the object as it was, with an older revision:
    // the position in the stream only moves forward.
    const revision = obj.metadata?.resourceVersion;
    if (revision !== undefined && Number(revision) > Number(this.revision ?? 0)) this.revision = revision;
    if (event.type === "BOOKMARK") return;
    const name = obj.metadata.name;
    if (event.type === "DELETED") this.objects.delete(name);
    else this.objects.set(name, obj);
    this.onChange(this.plural, event.type === "DELETED" ? null : obj);
  }
}
