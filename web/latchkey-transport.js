// latchkey-transport.js: how latchkey.js talks to the service: its errors (problem+json
// answers read into a LatchkeyError that says whether a retry may succeed or the session is
// over), the waits between retries, and following GET /auth/events (Server-Sent Events) for
// the session it holds.
//
// The stream is read with a streamed `fetch`, so a stateless client sends its
// `Authorization` header and nothing rides in the URL; the cookie goes as for any request.
// A `revoked` event ends the session at once; a stream that ends, fails or stays silent past
// the heartbeat is opened again after a back-off (and at once when the browser comes back
// online), and an answer that says the session is gone ends it too.

/** Codes of a 401 that end the session for good. */
const DEFINITIVE = new Set([
  "token_reused",
  "session_revoked",
  "token_expired",
  "invalid_token",
  "token_mode_mismatch",
]);

/** Failure of a request to the service: `code` is the problem's code (or "network"). */
export class LatchkeyError extends Error {
  constructor(status, code, detail, retryAfterMs) {
    super(detail || code);
    this.name = "LatchkeyError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  /** Whether trying again (with the same token) may succeed. */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }

  /** Whether this answer ends the session. */
  get definitive() {
    return this.status === 401 && DEFINITIVE.has(this.code);
  }
}

function retryAfterMs(res) {
  const v = res.headers.get("retry-after");
  const secs = v === null ? NaN : Number(v);
  return Number.isFinite(secs) ? Math.max(0, secs) * 1000 : undefined;
}

/** Reads a failed answer (problem+json or not) into a LatchkeyError. */
export async function problemOf(res) {
  let body = {};
  try {
    body = await res.json();
  } catch {
    // not JSON: keep the status alone
  }
  return new LatchkeyError(
    res.status,
    body.code || `http_${res.status}`,
    body.detail || res.statusText,
    retryAfterMs(res),
  );
}

/** Waits `ms`, or less when the browser comes back online or `signal` aborts. */
export const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      globalThis.removeEventListener?.("online", done);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    // Back online: retry now rather than at the end of the back-off.
    globalThis.addEventListener?.("online", done);
    signal?.addEventListener("abort", done);
  });

/** The live stream of one client's session, from `start()` until `stop()` or revocation. */
export class EventStream {
  /**
   * @param client the Latchkey client: its `fetch`, `base`, `options`, `signedIn`,
   *   `refresh()` and `_signedOut(reason)`.
   */
  constructor(client) {
    this.client = client;
    this.controller = new AbortController();
  }

  /** Follows the stream until stopped, revoked or signed out. */
  start() {
    this._follow();
  }

  stop() {
    this.controller.abort();
  }

  get _live() {
    return !this.controller.signal.aborted && this.client.signedIn;
  }

  async _follow() {
    let backoff = 500;
    const max = this.client.options.retryMaxMs;
    while (this._live) {
      let outcome;
      try {
        outcome = await this._readOnce();
        if (outcome === "opened") backoff = 500;
      } catch {
        outcome = "lost";
      }
      if (!this._live || outcome === "revoked") return;
      await sleep(backoff, this.controller.signal);
      backoff = Math.min(backoff * 2, max);
    }
  }

  /** One connection of the stream; resolves how it ended. */
  async _readOnce() {
    const { client } = this;
    const res = await client.fetch(client.base + "events", {
      headers: { accept: "text/event-stream" },
      signal: this.controller.signal,
    });
    if (!res.ok) {
      const problem = await problemOf(res);
      if (problem.definitive) {
        client._signedOut(problem.code);
        return "revoked";
      }
      return "failed";
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let watchdog;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => reader.cancel().catch(() => {}), client.options.heartbeatMs);
    };
    try {
      arm();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "opened";
        arm();
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          if (this._onEvent(block) === "revoked") return "revoked";
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  /** One event block (`event:` and `data:` lines); "revoked" when it ended the session. */
  _onEvent(block) {
    const { client } = this;
    let name = "message";
    let data = "";
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    let payload = {};
    try {
      payload = data ? JSON.parse(data) : {};
    } catch {
      return undefined;
    }
    if (name === "revoked") {
      client._signedOut(payload.reason || "revoked");
      return "revoked";
    }
    if (name === "expiring" && client.options.autoRefresh) client.refresh();
    client.options.onEvent?.(name, payload);
    return undefined;
  }
}
