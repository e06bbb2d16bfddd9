// "Sign out everywhere" reaches every tab and device of the account at once, through the
// event stream, without a reload; another account sees nothing of it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startService, PASSWORD } from "./lib/service.js";
import { launch, harnessContext, openTabs } from "./lib/browser.js";
import { states, until } from "./lib/checks.js";

let svc;
let browser;

before(async () => {
  svc = await startService({ accessTtl: 2 });
  svc.addUser("alice@example.com");
  svc.addUser("bob@example.com");
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await svc?.stop();
});

const login = (page, email) =>
  page.evaluate(([e, p]) => window.lk.login({ email: e, password: p }), [email, PASSWORD]);

/** Waits until every page's event stream is open (the server counts a live stream). */
async function streamsOpen(n) {
  await until(
    async () => {
      const res = await fetch(`${svc.origin}/healthz`);
      return res.ok && (await openStreams()) >= n;
    },
    10000,
    `${n} open streams`,
  );
}

/** Open streams, read from the sessions each tab's stream follows: counted in the page. */
let pagesWithStreams = [];
async function openStreams() {
  let n = 0;
  for (const p of pagesWithStreams) {
    if (await p.evaluate(() => window.lk._stream !== null && window.lk.signedIn)) n++;
  }
  return n;
}

test("sign out everywhere in one tab signs out every tab and device of the account within a second", async () => {
  // Context A: five tabs of one cookie session. Context B: the same user on another
  // "device". Context C: another user.
  const a = await harnessContext(browser, svc.origin);
  const [a1] = await openTabs(a, svc.origin, 1, { mode: "stateful" });
  await login(a1, "alice@example.com");
  const aRest = await openTabs(a, svc.origin, 4, { mode: "stateful" });
  const aTabs = [a1, ...aRest];

  const b = await harnessContext(browser, svc.origin);
  const [b1] = await openTabs(b, svc.origin, 1, { mode: "stateless" });
  await login(b1, "alice@example.com");

  const c = await harnessContext(browser, svc.origin);
  const [c1] = await openTabs(c, svc.origin, 1, { mode: "stateful" });
  const bob = await login(c1, "bob@example.com");

  pagesWithStreams = [...aTabs, b1, c1];
  await streamsOpen(7);
  // Give the streams a moment to be registered server-side.
  await new Promise((r) => setTimeout(r, 300));

  const t0 = await a1.evaluate(async () => {
    const at = Date.now();
    await window.lk.logoutEverywhere();
    return at;
  });
  const watched = [...aRest, b1];
  await until(
    async () => (await states(watched)).every((s) => !s.signedIn),
    3000,
    "every tab and device of alice signed out",
  );
  const delays = [];
  for (const p of watched) {
    const out = await p.evaluate(() => window.signedOut);
    assert.equal(out.length, 1, "onSignedOut called once");
    assert.equal(out[0].reason, "logout_all");
    delays.push(out[0].at - t0);
  }
  console.log(`sign out everywhere reached the other tabs and device after ${JSON.stringify(delays)} ms`);
  for (const d of delays) assert.ok(d < 1000, `signed out after ${d} ms`);
  // No reload happened: each page is still the one the test opened.
  for (const p of watched) assert.equal(await p.evaluate(() => performance.navigation.type), 0);
  assert.equal(await a1.evaluate(() => window.lk.signedIn), false);

  // Bob saw nothing and sees none of alice's sessions.
  await new Promise((r) => setTimeout(r, 500));
  const [bobState] = await states([c1]);
  assert.equal(bobState.signedIn, true);
  assert.deepEqual(bobState.signedOut, []);
  const list = await c1.evaluate(() => window.lk.sessions());
  assert.ok(list.length >= 1);
  assert.ok(list.every((s) => s.owner_key === list[0].owner_key));
  assert.ok(list.some((s) => s.session_id === bob.session_id && s.current === true));
  const aliceSessions = svc
    .db("SELECT id FROM latchkey.sessions WHERE owner_key LIKE 'user:%' AND owner_key <> '" + list[0].owner_key + "'")
    .split("\n")
    .filter(Boolean);
  assert.ok(aliceSessions.length >= 2);
  assert.ok(aliceSessions.every((id) => !list.some((s) => s.session_id === id)));
  await Promise.all([a.close(), b.close(), c.close()]);
});
