// Transient failures never sign a user out: the network cut for 10 s during a refresh, a
// refresh whose answer is lost after the server rotated, a 503 with Retry-After. The tab
// keeps retrying with the same token and ends on the session's current token. An event
// stream that is cut (the service restarts) reconnects and still reports a revocation.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startService, PASSWORD } from "./lib/service.js";
import { launch, harnessContext, openTabs } from "./lib/browser.js";
import { version, isCurrent, until } from "./lib/checks.js";

let svc;
let browser;

before(async () => {
  svc = await startService({ accessTtl: 2 });
  svc.addUser("alice@example.com");
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await svc?.stop();
});

async function signedInTab(context) {
  const [page] = await openTabs(context, svc.origin, 1, { mode: "stateless" });
  const login = await page.evaluate(
    (p) => window.lk.login({ email: "alice@example.com", password: p }),
    PASSWORD,
  );
  return { page, sessionId: login.session_id };
}

const tokenOf = (page) => page.evaluate(() => window.lk.tokens()?.refresh_token);

test("ten seconds offline during a refresh: still signed in, on the current token, still told of a revocation", async () => {
  const context = await harnessContext(browser, svc.origin);
  const { page, sessionId } = await signedInTab(context);
  let failed = 0;
  let streams = 0;
  context.on("request", (r) => {
    if (r.url().endsWith("/auth/events")) streams++;
  });
  context.on("requestfailed", (r) => {
    if (r.url().endsWith("/auth/refresh")) failed++;
  });
  // The 2 s access token is refreshed 0.5 s before it expires: the network goes down under
  // that refresh (its request fails as the cut begins) and stays down for 10 s.
  let cut;
  const cutDone = new Promise((resolve) => {
    cut = resolve;
  });
  await context.route(`${svc.origin}/auth/refresh`, async (route) => {
    await context.setOffline(true);
    await route.abort("internetdisconnected");
    cut();
  });
  await cutDone;
  await context.unroute(`${svc.origin}/auth/refresh`);
  const v0 = version(svc, sessionId);
  await new Promise((r) => setTimeout(r, 10000));
  const failedOffline = failed;
  const whileOffline = await page.evaluate(() => ({ signedIn: window.lk.signedIn, out: window.signedOut }));
  await context.setOffline(false);
  // Back online: the retry goes through (a rotation), and the tab holds its result.
  await until(
    async () => version(svc, sessionId) > v0 && isCurrent(svc, sessionId, await tokenOf(page)),
    10000,
    "the refresh after the cut, and the tab on its token",
  );
  const v = version(svc, sessionId);
  console.log(`offline 10 s: ${failedOffline} refresh attempts failed, then recovered: version ${v0} -> ${v}`);
  assert.ok(v >= v0 + 1, "the refresh went through once the network was back");
  assert.equal(whileOffline.signedIn, true, "never signed out while offline");
  assert.deepEqual(whileOffline.out, []);
  assert.ok(failedOffline >= 2, `retried while offline (${failedOffline} failures)`);
  assert.deepEqual(await page.evaluate(() => window.signedOut), []);
  const who = await page.evaluate(async () => (await window.lk.fetch(window.lk.base + "session")).status);
  assert.equal(who, 200);

  // The stream still works: a revocation made now reaches the tab.
  await until(() => page.evaluate(() => window.lk._stream !== null), 5000, "stream");
  await new Promise((r) => setTimeout(r, 1500));
  const t0 = Date.now();
  svc.db(`SELECT latchkey.latchkey_revoke_session('${sessionId}'::uuid)`);
  await until(() => page.evaluate(() => window.signedOut.length === 1), 3000, "the revocation");
  const took = Date.now() - t0;
  assert.equal(await page.evaluate(() => window.signedOut[0].reason), "admin");
  console.log(`revocation seen in ${took} ms (stream reopened ${streams} times meanwhile)`);
  assert.ok(took < 1000);
  await context.close();
});

test("a lost refresh answer and a 503 are retried with the same token: one rotation, no sign-out", async () => {
  const context = await harnessContext(browser, svc.origin);
  const { page, sessionId } = await signedInTab(context);
  await page.evaluate(() => {
    window.lk.options.autoRefresh = false;
    clearTimeout(window.lk._timer);
  });
  const bodies = [];
  context.on("request", (r) => {
    if (r.url().endsWith("/auth/refresh")) bodies.push(r.postDataJSON().refresh_token);
  });

  // Lost answer: the server rotates, the browser sees a network error.
  let lost = false;
  await context.route(`${svc.origin}/auth/refresh`, async (route) => {
    if (!lost) {
      lost = true;
      await route.fetch(); // reaches the server, which rotates
      return route.abort("connectionreset");
    }
    return route.continue();
  });
  const v0 = version(svc, sessionId);
  const held = await tokenOf(page);
  assert.equal(await page.evaluate(() => window.lk.refresh({ force: true })), true);
  assert.equal(version(svc, sessionId), v0 + 1, "one rotation for the lost answer and its retry");
  assert.ok(bodies.length >= 2 && bodies.every((t) => t === held), "retried with the same token");
  assert.ok(isCurrent(svc, sessionId, await tokenOf(page)));
  await context.unroute(`${svc.origin}/auth/refresh`);

  // 503 with Retry-After: 1, then the real answer.
  bodies.length = 0;
  let refused = false;
  await context.route(`${svc.origin}/auth/refresh`, async (route) => {
    if (!refused) {
      refused = true;
      return route.fulfill({
        status: 503,
        headers: { "retry-after": "1", "content-type": "application/problem+json" },
        body: JSON.stringify({ status: 503, code: "unavailable", title: "Service Unavailable" }),
      });
    }
    return route.continue();
  });
  const held2 = await tokenOf(page);
  const started = Date.now();
  assert.equal(await page.evaluate(() => window.lk.refresh({ force: true })), true);
  const waited = Date.now() - started;
  assert.ok(waited >= 900, `waited the Retry-After (${waited} ms)`);
  assert.equal(version(svc, sessionId), v0 + 2);
  assert.ok(bodies.length === 2 && bodies.every((t) => t === held2));
  assert.ok(isCurrent(svc, sessionId, await tokenOf(page)));
  assert.deepEqual(await page.evaluate(() => window.signedOut), []);
  await context.close();
});

test("a lost event stream (the service restarts) reconnects and still reports a revocation at once", async () => {
  const context = await harnessContext(browser, svc.origin);
  let opened = 0;
  context.on("response", (r) => {
    if (r.url().endsWith("/auth/events") && r.status() === 200) opened++;
  });
  const [page] = await openTabs(context, svc.origin, 1, { mode: "stateful" });
  const login = await page.evaluate(
    (p) => window.lk.login({ email: "alice@example.com", password: p }),
    PASSWORD,
  );
  await until(() => opened === 1, 5000, "the stream");
  // SIGTERM ends every stream; the service is down for 2 s, then back on the same port.
  await svc.restart(2000);
  await until(() => opened === 2, 15000, "the stream opened again");
  assert.deepEqual(await page.evaluate(() => window.signedOut), [], "not signed out by the outage");
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  svc.db(`SELECT latchkey.latchkey_revoke_session('${login.session_id}'::uuid)`);
  await until(
    () => page.evaluate(() => window.signedOut.length === 1),
    2000,
    "the revocation through the new stream",
  );
  const took = Date.now() - t0;
  assert.equal(await page.evaluate(() => window.signedOut[0].reason), "admin");
  console.log(`stream reconnected after a restart; a revocation reached the tab in ${took} ms`);
  assert.ok(took < 1000);
  await context.close();
});
