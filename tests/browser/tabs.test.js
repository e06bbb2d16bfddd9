// Five tabs of one browser refreshing one session at the same instant, round after round:
// stateful (one shared cookie) and stateless, each with the client's cross-tab sharing and
// with sharing off (the server's compare-and-swap and grace window alone). No tab is ever
// signed out, every tab ends on the session's current token, and `version` rises by exactly
// one per round (uncoordinated cookie tabs: once per distinct cookie sent).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startService, PASSWORD } from "./lib/service.js";
import { launch, harnessContext, openTabs, countRequests } from "./lib/browser.js";
import { version, isCurrent, refreshTogether, states } from "./lib/checks.js";

const ROUNDS = Number(process.env.LATCHKEY_BROWSER_ROUNDS || 100);
const TABS = 5;
const EMAIL = "alice@example.com";

let svc;
let browser;

before(async () => {
  svc = await startService({ accessTtl: 2 });
  svc.addUser(EMAIL);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await svc?.stop();
});

/** `ROUNDS` rounds of all tabs refreshing at once; returns the refresh requests per round. */
async function rounds(pages, sessionId, counter, { exact = true } = {}) {
  const perRound = [];
  // Start from quiet: a tab that was handed an access token close to its expiry refreshed it
  // while the tabs opened, and a refresh within `coalesceMs` of another counts as that one.
  for (let quiet = counter.n - 1; quiet !== counter.n; ) {
    quiet = counter.n;
    await new Promise((res) => setTimeout(res, 600));
  }
  let v = version(svc, sessionId);
  for (let r = 0; r < ROUNDS; r++) {
    const sent = counter.n;
    const results = await refreshTogether(pages);
    assert.deepEqual(results, Array(TABS).fill(true), `round ${r}: every tab still signed in`);
    const now = version(svc, sessionId);
    const requests = counter.n - sent;
    if (exact) {
      assert.equal(now, v + 1, `round ${r}: version up by exactly one`);
    } else {
      // Uncoordinated tabs share one cookie jar: a tab whose request leaves after another
      // tab's answer set the new cookie sends that one, a rotation of its own. Requests that
      // carried the same cookie still make one version.
      assert.ok(now >= v + 1 && now - v <= requests, `round ${r}: ${now - v} versions, ${requests} requests`);
    }
    v = now;
    perRound.push(requests);
    // Let the round settle: the next one starts well after this one's last answer.
    await new Promise((res) => setTimeout(res, 150));
  }
  return perRound;
}

function summary(label, perRound) {
  const total = perRound.reduce((a, b) => a + b, 0);
  const hist = {};
  for (const n of perRound) hist[n] = (hist[n] || 0) + 1;
  console.log(
    `${label}: ${ROUNDS} rounds, ${total} refresh requests (${(total / ROUNDS).toFixed(2)}/round; ` +
      `requests-per-round histogram ${JSON.stringify(hist)})`,
  );
  return total;
}

async function statefulTabs(share) {
  const exact = share;
  const context = await harnessContext(browser, svc.origin);
  const counter = countRequests(context, "/auth/refresh");
  const opts = { mode: "stateful", share };
  const [first] = await openTabs(context, svc.origin, 1, opts);
  const login = await first.evaluate(
    ([email, password]) => window.lk.login({ email, password }),
    [EMAIL, PASSWORD],
  );
  const others = await openTabs(context, svc.origin, TABS - 1, opts);
  const pages = [first, ...others];
  const before = await states(pages);
  assert.ok(before.every((s) => s.signedIn && s.sessionId === login.session_id));

  const start = version(svc, login.session_id);
  const perRound = await rounds(pages, login.session_id, counter, { exact });
  const versions = version(svc, login.session_id) - start;
  console.log(`stateful, sharing ${share ? "on" : "off"}: ${versions} versions in ${ROUNDS} rounds`);
  const total = summary(`stateful, sharing ${share ? "on" : "off"}`, perRound);

  const after = await states(pages);
  for (const s of after) {
    assert.equal(s.signedIn, true);
    assert.deepEqual(s.signedOut, []);
    assert.equal(s.sessionId, login.session_id);
  }
  const cookies = await context.cookies();
  assert.equal(cookies.length, 1, "all tabs on one cookie");
  assert.equal(cookies[0].name, "latchkey");
  assert.ok(isCurrent(svc, login.session_id, cookies[0].value), "the cookie is the current token");
  // Every tab authenticates with it.
  for (const p of pages) {
    const who = await p.evaluate(() => window.lk.session());
    assert.equal(who.session_id, login.session_id);
  }
  await context.close();
  return { perRound, total };
}

test("stateful: five tabs on one cookie refresh together, one version per round, none signed out", async () => {
  const { total } = await statefulTabs(true);
  assert.ok(total <= ROUNDS * 1.2, `${total} requests in ${ROUNDS} rounds`);
});

test("stateful with sharing off: five racing refreshes of one cookie per round, none signed out, one version per cookie sent", async () => {
  const { perRound } = await statefulTabs(false);
  // (the rounds also checked each round's versions: at least one, never more than requests)
  // Every tab sends its own refresh: the server's compare-and-swap and grace window, not the
  // client, turn five racing requests into one version.
  assert.ok(perRound.every((n) => n >= TABS - 1), JSON.stringify(perRound));
});

async function statelessTabs(share) {
  const context = await harnessContext(browser, svc.origin);
  const counter = countRequests(context, "/auth/refresh");
  const opts = { mode: "stateless", share, autoRefresh: false };
  const [first] = await openTabs(context, svc.origin, 1, opts);
  const login = await first.evaluate(
    ([email, password]) => window.lk.login({ email, password }),
    [EMAIL, PASSWORD],
  );
  const others = await openTabs(context, svc.origin, TABS - 1, opts);
  if (!share) {
    // Without sharing each tab holds what it was given: here all five the same tokens, as
    // tabs restored from one state would (fresh ones: tokens handed over with their access
    // token about to expire would each be refreshed at once, by each tab on its own).
    const tokens = await first.evaluate(async () => {
      await window.lk.refresh({ force: true });
      return window.lk.tokens();
    });
    for (const p of others) await p.evaluate((t) => window.lk.useTokens(t), tokens);
  }
  const pages = [first, ...others];
  const before = await states(pages);
  assert.ok(
    before.every((s) => s.signedIn && s.sessionId === login.session_id),
    JSON.stringify(before),
  );

  const perRound = await rounds(pages, login.session_id, counter);
  const total = summary(`stateless, sharing ${share ? "on" : "off"}`, perRound);

  const after = await states(pages);
  const token = after[0].refreshToken;
  for (const s of after) {
    assert.equal(s.signedIn, true);
    assert.deepEqual(s.signedOut, []);
    assert.equal(s.refreshToken, token, "every tab converged on one refresh token");
  }
  assert.ok(isCurrent(svc, login.session_id, token), "that token is the current one");
  // Tokens in memory only: nothing in web storage, no cookie, IndexedDB without a token.
  const stored = await first.evaluate(async () => {
    const db = await new Promise((resolve) => {
      const open = indexedDB.open("latchkey", 1);
      open.onsuccess = () => resolve(open.result);
    });
    const marks = !db.objectStoreNames.contains("refresh-marks")
      ? []
      : await new Promise((resolve) => {
          const req = db.transaction("refresh-marks").objectStore("refresh-marks").getAll();
          req.onsuccess = () => resolve(req.result);
        });
    return {
      web: localStorage.length + sessionStorage.length,
      cookie: document.cookie,
      marks: JSON.stringify(marks),
    };
  });
  assert.equal(stored.web, 0);
  assert.equal(stored.cookie, "");
  assert.ok(!/lkr_|eyJ/.test(stored.marks), stored.marks);
  assert.deepEqual((await context.cookies()).length, 0);
  await context.close();
  return { perRound, total };
}

test("stateless with sharing: one tab refreshes for all, about one request per round", async () => {
  const { perRound, total } = await statelessTabs(true);
  // One request per round; a straggler's own request (answered by the grace window) is
  // allowed, five per round is not.
  assert.ok(total <= ROUNDS * 1.2, `${total} requests in ${ROUNDS} rounds`);
  assert.ok(perRound.every((n) => n <= 2), JSON.stringify(perRound));
});

test("stateless without sharing: the grace window alone keeps five racing tabs signed in", async () => {
  const { total } = await statelessTabs(false);
  assert.equal(total, ROUNDS * TABS, "every tab sent its own refresh");
});
