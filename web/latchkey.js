// latchkey.js: the browser client of a latchkey service. A dependency-free ES module.
//
//   import { Latchkey } from "https://auth.example.com/auth/client.js";
//   const auth = new Latchkey({ mode: "stateful", onSignedOut: (reason) => showLogin(reason) });
//   await auth.start();               // resumes the session this browser already has, if any
//   await auth.login({ email, password });
//   const res = await auth.fetch("/api/orders");  // credentials attached, refreshed on expiry
//
// Two modes:
// - "stateful" (the default): an HttpOnly cookie the tabs share; the client refreshes it
//   before it expires and after a 401 token_expired, one tab at a time (Web Lock).
// - "stateless": a JWT access token and a rotating refresh token, kept in memory only. The
//   tabs of one origin share them over a BroadcastChannel and refresh one at a time under a
//   Web Lock; the server's grace window covers whatever still races. `share: false` turns
//   the sharing off (each tab then refreshes on its own; the grace window alone keeps them).
//
// Refresh retries follow the server's rules: a 503 or 429 waits for its Retry-After, a lost
// answer (network error, timeout) retries after 0.25 s doubling to 10 s (at once when the
// browser comes back online), always with the SAME token, so a retry inside the grace
// window gets the successor the lost answer carried. Only a definitive 401 (token_reused,
// session_revoked, token_expired, invalid_token, token_mode_mismatch) signs the user out; a
// transient error never does.
//
// The client follows GET /auth/events (latchkey-transport.js, beside this file) and calls
// onSignedOut(reason) as soon as the session is revoked anywhere (another tab, another
// device, an administrator), reconnecting after a lost connection.

import { EventStream, LatchkeyError, problemOf, sleep } from "./latchkey-transport.js";

export { LatchkeyError };

const DEFAULTS = {
  mode: "stateful",
  share: true,
  autoRefresh: true,
  refreshAhead: 0.25,
  coalesceMs: 250,
  events: true,
  retryMaxMs: 10000,
  requestTimeoutMs: 15000,
  heartbeatMs: 45000,
};

/**
 * Runs `op(store)` in a transaction on latchkey's IndexedDB store and resolves to its
 * request's result once the transaction is complete (undefined without IndexedDB).
 */
let database;
function idb(mode, op) {
  if (typeof indexedDB === "undefined") return Promise.resolve(undefined);
  database ??= new Promise((resolve) => {
    const open = indexedDB.open("latchkey", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("refresh-marks");
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => resolve(null);
  });
  return database.then(
    (db) =>
      db &&
      new Promise((resolve) => {
        const tx = db.transaction("refresh-marks", mode);
        const req = op(tx.objectStore("refresh-marks"));
        tx.oncomplete = () => resolve(req.result);
        tx.onerror = tx.onabort = () => resolve(undefined);
      }),
    () => undefined,
  );
}

/** The directory this module was loaded from: where the service's `/auth` routes are. */
function defaultBase() {
  try {
    return new URL(".", import.meta.url).href;
  } catch {
    return "/auth/";
  }
}

/** A client of one latchkey service, for one page. */
export class Latchkey {
  /** @param {import("./latchkey").LatchkeyOptions} [options] */
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    if (!["stateful", "stateless"].includes(this.options.mode)) {
      throw new TypeError(`mode must be "stateful" or "stateless"`);
    }
    this.base = new URL(this.options.baseUrl || defaultBase(), location.href).href;
    if (!this.base.endsWith("/")) this.base += "/";
    this.mode = this.options.mode;
    this.signedIn = false;
    this.sessionId = null;
    this._tokens = null; // stateless: { access_token, refresh_token, access_expires_at, session_id }
    this._gen = 0; // generation of the tokens held (stateless sharing)
    this._expiresAt = 0; // stateful: when the cookie session idles out (ms)
    this._refreshing = null;
    this._timer = null;
    this._stream = null;
    this._closed = false;
    this._key = `latchkey:${this.mode}:${this.base}`;
    this._sharing =
      this.options.share &&
      typeof BroadcastChannel === "function" &&
      typeof navigator !== "undefined" &&
      !!navigator.locks;
    if (this._sharing) {
      this._channel = new BroadcastChannel(this._key);
      this._channel.onmessage = (e) => this._onMessage(e.data);
    }
  }

  // ----- public API -------------------------------------------------------------------

  /**
   * Resumes the session this browser has: the cookie (stateful), or the tokens another tab
   * of this origin holds (stateless, with sharing). Resolves to the session or null.
   */
  async start() {
    if (this.mode === "stateless") {
      if (this._sharing && !this._tokens) {
        this._channel.postMessage({ type: "hello" });
        await this._waitFor(() => this._tokens, 300);
      }
      if (!this._tokens) return null;
    }
    try {
      const session = await this.session();
      if (session) this._becomeSignedIn(session.session_id, session.expires_at);
      return session;
    } catch (e) {
      if (e instanceof LatchkeyError && e.transient) return null;
      throw e;
    }
  }

  /** Signs in with email and password in this client's mode. */
  async login({ email, password }) {
    const res = await this._send("login", {
      method: "POST",
      json: { email, password, mode: this.mode },
      auth: false,
    });
    if (!res.ok) throw await problemOf(res);
    const body = await res.json();
    if (this.mode === "stateless") {
      this._adopt(this._tokensFrom(body), await this._bumpGen());
      this._broadcast({ type: "tokens", tokens: this._tokens, gen: this._gen });
    } else {
      this._expiresAt = Date.now() + body.expires_in * 1000;
      if (this._sharing) await this._markRefreshed();
      this._broadcast({ type: "signed-in" });
    }
    this._becomeSignedIn(body.session_id);
    return body;
  }

  /** Signs out this session (every tab of it). */
  async logout() {
    await this._signOutRequest("logout", undefined, "logout");
  }

  /** Signs out every session of this account, on every device ("sign out everywhere"). */
  async logoutEverywhere() {
    await this._signOutRequest("logout-all", {}, "logout_all");
  }

  /** Signs out every other session of this account and keeps this one. */
  async logoutOthers() {
    const res = await this.fetch(this.base + "logout-all", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ keep_current: true }),
    });
    if (!res.ok) throw await problemOf(res);
    return (await res.json()).revoked;
  }

  /** The current session (`GET /auth/session`), or null when signed out. */
  async session() {
    const res = await this.fetch(this.base + "session");
    if (res.status === 401) return null;
    if (!res.ok) throw await problemOf(res);
    return res.json();
  }

  /** The account's sessions; the caller's is marked `current: true`. */
  async sessions() {
    const res = await this.fetch(this.base + "sessions");
    if (!res.ok) throw await problemOf(res);
    return (await res.json()).sessions;
  }

  /** Signs out one session of the account by its id. */
  async revokeSession(id) {
    const res = await this.fetch(this.base + "sessions/" + encodeURIComponent(id), {
      method: "DELETE",
    });
    if (!res.ok && res.status !== 404) throw await problemOf(res);
    return res.ok;
  }

  /** The access token (stateless mode), refreshed first when it is about to expire. */
  async accessToken() {
    if (this.mode !== "stateless" || !this._tokens) return null;
    if (this._tokens.access_expires_at - Date.now() < 1000) await this.refresh();
    return this._tokens?.access_token ?? null;
  }

  /**
   * `fetch` with this session's credentials: the cookie, or `Authorization: Bearer`. A 401
   * token_expired refreshes once and tries again; a definitive 401 signs out.
   */
  async fetch(input, init = {}) {
    const attempt = async () => {
      const headers = new Headers(init.headers);
      if (this.mode === "stateless") {
        const token = await this.accessToken();
        if (token) headers.set("authorization", `Bearer ${token}`);
      }
      return fetch(input, { ...init, headers, credentials: "include" });
    };
    let res = await attempt();
    if (res.status === 401 && this.signedIn) {
      const problem = await problemOf(res.clone());
      if (problem.code === "token_expired") {
        if (await this.refresh()) res = await attempt();
      } else if (problem.definitive && this._isOurs(input)) {
        this._signedOut(problem.code);
      }
    }
    return res;
  }

  /**
   * Refreshes the session: one tab at a time (with sharing), retrying transient failures
   * with the same token. Resolves true when signed in afterwards, false when signed out.
   */
  refresh({ force = false } = {}) {
    if (!this._refreshing) {
      this._refreshing = this._refreshShared(force).finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** Stops timers, the event stream and the channel. */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    this._stopEvents();
    this._channel?.close();
  }

  /** The session's tokens (stateless mode; for tests and native bridges), or null. */
  tokens() {
    return this._tokens ? { ...this._tokens } : null;
  }

  /** Takes tokens obtained elsewhere (stateless mode), e.g. handed over by a native shell. */
  useTokens(tokens) {
    this._adopt({ ...tokens }, this._gen);
    this._becomeSignedIn(tokens.session_id);
  }

  // ----- refresh ----------------------------------------------------------------------

  async _refreshShared(force) {
    if (!this._sharing) return this._refreshRetrying();
    const seen = await this._readMark();
    const seenToken = this._tokens?.refresh_token;
    if (!force && this._fresh(seen)) return this._caughtUp(seen, seenToken);
    return navigator.locks.request(`${this._key}:refresh`, async () => {
      const now = await this._readMark();
      if (!force && now.gen !== seen.gen) return this._caughtUp(now, seenToken);
      const ok = await this._refreshRetrying();
      if (ok) {
        const gen = await this._markRefreshed();
        if (this.mode === "stateless") {
          this._gen = gen;
          this._broadcast({ type: "tokens", tokens: this._tokens, gen: this._gen });
        } else {
          this._broadcast({ type: "refreshed", expiresAt: this._expiresAt });
        }
      }
      return ok;
    });
  }

  /** Another tab refreshed since we looked: take its result instead of refreshing again. */
  async _caughtUp(mark, seenToken) {
    if (this.mode === "stateful") {
      // The browser already holds the new cookie.
      if (mark.expiresAt) this._expiresAt = mark.expiresAt;
      this._schedule();
      return this.signedIn;
    }
    if (this._tokens?.refresh_token === seenToken && this._gen < mark.gen) {
      await this._waitFor(() => this._gen >= mark.gen, 1000);
    }
    if (this._gen >= mark.gen) return this.signedIn;
    // The handover was lost: refresh with what we hold; the grace window answers with the
    // successor the other tab got.
    return this._refreshRetrying();
  }

  /** One refresh, retried with the same token until it succeeds or fails for good. */
  async _refreshRetrying() {
    if (this.mode === "stateless" && !this._tokens) return false;
    const token = this._tokens?.refresh_token;
    let backoff = 250;
    for (;;) {
      if (this._closed) return false;
      let res;
      try {
        res = await this._send("refresh", {
          method: "POST",
          json: token ? { refresh_token: token } : undefined,
          auth: false,
        });
      } catch {
        // Lost answer or no network: the same token again (the grace window covers it).
        await sleep(backoff);
        backoff = Math.min(backoff * 2, this.options.retryMaxMs);
        continue;
      }
      if (res.ok) {
        const body = await res.json();
        if (this.mode === "stateless") {
          if (this._tokens?.refresh_token !== token) return true; // taken over meanwhile
          this._adopt(this._tokensFrom(body), this._gen);
        } else {
          this._expiresAt = Date.now() + body.expires_in * 1000;
          this._schedule();
        }
        return true;
      }
      const problem = await problemOf(res);
      if (problem.transient) {
        const wait = problem.retryAfterMs ?? backoff;
        await sleep(Math.min(Math.max(wait, 100), 60000));
        backoff = Math.min(backoff * 2, this.options.retryMaxMs);
        continue;
      }
      if (this.mode === "stateless" && this._tokens?.refresh_token !== token) {
        return this.signedIn; // another tab's newer token arrived while this one failed
      }
      if (problem.definitive || problem.status === 400) {
        this._signedOut(problem.code);
        return false;
      }
      // Neither transient nor the end of the session (e.g. origin_rejected: a setup error).
      this.options.onError?.(problem);
      return this.signedIn;
    }
  }

  _schedule() {
    clearTimeout(this._timer);
    if (!this.options.autoRefresh || !this.signedIn || this._closed) return;
    let at;
    let lifetime;
    if (this.mode === "stateless") {
      if (!this._tokens) return;
      at = this._tokens.access_expires_at;
      lifetime = this._tokens.lifetime_ms;
    } else {
      at = this._expiresAt;
      lifetime = at - Date.now();
    }
    if (!at) return;
    const ahead = Math.max(lifetime * this.options.refreshAhead, 500);
    const delay = Math.min(Math.max(at - ahead - Date.now(), 0), 2 ** 31 - 1);
    this._timer = setTimeout(() => this.refresh(), delay);
  }

  // ----- cross-tab sharing ------------------------------------------------------------

  /**
   * The last refresh any tab made: `{ gen, at, expiresAt }` (no secret). Kept in IndexedDB,
   * whose transactions every tab sees in order (localStorage is cached per process and can
   * be read stale right after another tab's write).
   */
  async _readMark() {
    const mark = await idb("readonly", (store) => store.get(this._key));
    return mark || { gen: this._gen, at: 0 };
  }

  async _markRefreshed() {
    const mark = await this._readMark();
    const next = { gen: mark.gen + 1, at: Date.now(), expiresAt: this._expiresAt || undefined };
    await idb("readwrite", (store) => store.put(next, this._key));
    return next.gen;
  }

  async _bumpGen() {
    return this._sharing ? this._markRefreshed() : this._gen + 1;
  }

  _fresh(mark) {
    return mark.gen > 0 && Date.now() - mark.at < this.options.coalesceMs && this.signedIn;
  }

  _broadcast(message) {
    if (this._sharing) this._channel.postMessage(message);
  }

  _onMessage(msg) {
    if (!msg || typeof msg !== "object" || this._closed) return;
    switch (msg.type) {
      case "hello":
        if (this._tokens && this.signedIn) {
          this._channel.postMessage({ type: "tokens", tokens: this._tokens, gen: this._gen });
        }
        break;
      case "tokens":
        if (this.mode === "stateless" && msg.tokens && (msg.gen > this._gen || !this._tokens)) {
          const wasIn = this.signedIn;
          this._adopt(msg.tokens, msg.gen);
          if (!wasIn) this._becomeSignedIn(msg.tokens.session_id);
        }
        break;
      case "refreshed":
        if (this.mode === "stateful" && msg.expiresAt) {
          this._expiresAt = msg.expiresAt;
          this._schedule();
        }
        break;
      case "signed-in":
        if (this.mode === "stateful" && !this.signedIn) this.start();
        break;
      case "signed-out":
        if (this.signedIn && (!msg.sessionId || msg.sessionId === this.sessionId)) {
          this._signedOut(msg.reason, false);
        }
        break;
      default:
    }
  }

  // ----- state ------------------------------------------------------------------------

  _tokensFrom(body) {
    const now = Date.now();
    return {
      access_token: body.access_token,
      refresh_token: body.refresh_token,
      session_id: body.session_id,
      access_expires_at: now + body.expires_in * 1000,
      lifetime_ms: body.expires_in * 1000,
    };
  }

  _adopt(tokens, gen) {
    this._tokens = tokens;
    this._gen = gen;
    if (this.signedIn) this._schedule();
  }

  _becomeSignedIn(sessionId, expiresAt) {
    const was = this.signedIn && this.sessionId === sessionId;
    this.signedIn = true;
    this.sessionId = sessionId;
    if (this.mode === "stateful" && expiresAt && !this._expiresAt) {
      this._expiresAt = Date.parse(expiresAt);
    }
    this._schedule();
    if (!was) {
      this._startEvents();
      this.options.onSignedIn?.(sessionId);
    }
  }

  _signedOut(reason, tell = true) {
    if (!this.signedIn) return;
    const sessionId = this.sessionId;
    this.signedIn = false;
    this.sessionId = null;
    this._tokens = null;
    this._expiresAt = 0;
    clearTimeout(this._timer);
    this._stopEvents();
    if (tell) this._broadcast({ type: "signed-out", reason, sessionId });
    this.options.onSignedOut?.(reason);
  }

  async _signOutRequest(path, json, reason) {
    const res = await this.fetch(this.base + path, {
      method: "POST",
      headers: json ? { "content-type": "application/json" } : {},
      body: json ? JSON.stringify(json) : undefined,
    });
    if (!res.ok && res.status !== 401) throw await problemOf(res);
    this._signedOut(reason);
  }

  // ----- live events (latchkey-transport.js) ------------------------------------------

  _startEvents() {
    if (!this.options.events || this._stream || this._closed) return;
    this._stream = new EventStream(this);
    this._stream.start();
  }

  _stopEvents() {
    this._stream?.stop();
    this._stream = null;
  }

  // ----- plumbing ---------------------------------------------------------------------

  _isOurs(input) {
    const url = typeof input === "string" ? input : input.url;
    return new URL(url, location.href).href.startsWith(this.base);
  }

  async _send(path, { method, json, auth }) {
    const headers = {};
    if (json !== undefined) headers["content-type"] = "application/json";
    const init = {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      credentials: "include",
      cache: "no-store",
    };
    if (AbortSignal.timeout) init.signal = AbortSignal.timeout(this.options.requestTimeoutMs);
    return auth === false ? fetch(this.base + path, init) : this.fetch(this.base + path, init);
  }

  _waitFor(test, ms) {
    return new Promise((resolve) => {
      const started = Date.now();
      const poll = () => {
        if (test() || Date.now() - started >= ms) resolve();
        else setTimeout(poll, 10);
      };
      poll();
    });
  }
}

export default Latchkey;
