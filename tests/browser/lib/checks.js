// Facts read from the service's database, and the shared start of a round.
import { createHash } from "node:crypto";

/** The session's `version` (bumped by exactly one per rotation). */
export function version(svc, sessionId) {
  return Number(svc.db(`SELECT version FROM latchkey.sessions WHERE id = '${sessionId}'`));
}

/** Whether `token` (lks_… or lkr_…) is the session's current token: SHA-256 of its secret. */
export function isCurrent(svc, sessionId, token) {
  const payload = Buffer.from(token.slice(4), "base64url");
  const hash = createHash("sha256").update(payload.subarray(16)).digest("hex");
  const stored = svc.db(
    `SELECT encode(token_hash, 'hex') FROM latchkey.sessions WHERE id = '${sessionId}'`,
  );
  return hash === stored;
}

/**
 * Every page calls `lk.refresh()` at one shared instant (a barrier on the common clock);
 * resolves to the pages' results.
 */
export async function refreshTogether(pages, leadMs = 150) {
  const at = Date.now() + leadMs;
  return Promise.all(
    pages.map((p) =>
      p.evaluate(async (t) => {
        while (Date.now() < t - 20) await new Promise((r) => setTimeout(r, 10));
        while (Date.now() < t) {
          // spin the last milliseconds so every tab starts on the same one
        }
        return window.lk.refresh();
      }, at),
    ),
  );
}

/** Each page's `{ signedIn, sessionId, signedOut }`. */
export function states(pages) {
  return Promise.all(
    pages.map((p) =>
      p.evaluate(() => ({
        signedIn: window.lk.signedIn,
        sessionId: window.lk.sessionId,
        signedOut: window.signedOut,
        refreshToken: window.lk.tokens()?.refresh_token ?? null,
      })),
    ),
  );
}

/** Waits until `test()` holds, polling every 25 ms, for at most `ms`. */
export async function until(test, ms, what) {
  const started = Date.now();
  for (;;) {
    if (await test()) return Date.now() - started;
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
