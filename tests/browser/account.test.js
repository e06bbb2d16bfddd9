// The account page in Chromium: signed in with the keyboard alone, its sessions listed with
// this device marked, one session signed out from it (that tab learns it live), the other
// sessions and then every one signed out, a live banner when the session ends elsewhere,
// an axe-core audit with no serious or critical violation, no CSP violation, phone width
// without horizontal scrolling. Screenshots go to docs/ when LATCHKEY_SCREENSHOTS=docs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { startService, PASSWORD } from "./lib/service.js";
import { launch, harnessContext, openTabs } from "./lib/browser.js";
import { until } from "./lib/checks.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const SHOTS =
  process.env.LATCHKEY_SCREENSHOTS === "docs"
    ? path.resolve(HERE, "../../docs")
    : path.resolve(HERE, "../../target/tmp/browser-screenshots");

const PHONE_UA =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const WINDOWS_UA =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";

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

/** A page of the account page, collecting CSP violations and page errors. */
async function accountPage(context) {
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(`${svc.origin}/auth/account`);
  return { page, problems };
}

/** The element focused after each of `n` Tab presses, described. */
async function tabOrder(page, n) {
  const seen = [];
  for (let i = 0; i < n; i++) {
    await page.keyboard.press("Tab");
    seen.push(
      await page.evaluate(() => {
        const e = document.activeElement;
        return e ? `${e.tagName.toLowerCase()}#${e.id}|${e.getAttribute("aria-label") || e.textContent.trim()}` : "none";
      }),
    );
  }
  return seen;
}

/** Presses Tab until the focused element matches `pred` (at most 40 times). */
async function tabTo(page, pred, what) {
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(pred)) return;
  }
  throw new Error(`Tab never reached ${what}`);
}

async function audit(page, label) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ["violations"] }),
  );
  const bad = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  console.log(
    `axe (${label}): ${result.violations.length} violations, ${bad.length} serious or critical` +
      (result.violations.length ? `: ${result.violations.map((v) => `${v.id}/${v.impact}`).join(", ")}` : ""),
  );
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help}`),
    [],
    `${label}: no serious or critical accessibility violation`,
  );
}

test("the account page: keyboard sign-in, sessions, sign out one / others / everywhere, live banner, axe", async () => {
  // Another device of alice's, signed in first: a Windows Edge browser.
  const other = await harnessContext(browser, svc.origin, { userAgent: WINDOWS_UA });
  const [otherTab] = await openTabs(other, svc.origin, 1, { mode: "stateful" });
  await otherTab.evaluate(
    (p) => window.lk.login({ email: "alice@example.com", password: p }),
    PASSWORD,
  );

  const desktop = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const { page, problems } = await accountPage(desktop);
  await page.waitForSelector("#signin:not([hidden])");
  await audit(page, "sign-in form");

  // Keyboard only: Tab to the email field, type, Tab, type, Enter.
  await tabTo(page, () => document.activeElement?.id === "email", "the email field");
  await page.keyboard.type("alice@example.com");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "password");
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#account:not([hidden])");
  await page.waitForSelector("#sessions li >> nth=1");

  const rows = await page.$$eval("#sessions li", (lis) =>
    lis.map((li) => ({ text: li.textContent, current: li.dataset.current === "true" })),
  );
  assert.equal(rows.length, 2);
  assert.equal(rows.filter((r) => r.current).length, 1, "this device marked once");
  assert.match(rows.find((r) => r.current).text, /This device/);
  assert.match(rows.find((r) => !r.current).text, /Edge on Windows/);
  assert.match(rows.find((r) => !r.current).text, /127\.0\.0\.1/);
  await audit(page, "signed in");

  // Every control is reached by Tab.
  const order = await tabOrder(page, 14);
  const controls = [
    "a#|Skip to content",
    "button#sign-out|",
    "button#|Sign out Edge",
    "button#sign-out-others|",
    "button#sign-out-everywhere|",
  ];
  for (const control of controls) {
    assert.ok(order.some((o) => o.startsWith(control)), `${control} in ${JSON.stringify(order)}`);
  }

  // A phone too, for the screenshots and the three-session list.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    userAgent: PHONE_UA,
    deviceScaleFactor: 1,
    isMobile: true,
    hasTouch: true,
  });
  const { page: phonePage, problems: phoneProblems } = await accountPage(phone);
  await phonePage.fill("#email", "alice@example.com");
  await phonePage.fill("#password", PASSWORD);
  await phonePage.click("button[type=submit]");
  await phonePage.waitForSelector("#sessions li >> nth=2");
  const overflow = await phonePage.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 0, `no horizontal scrolling at 390 px (${overflow} px too wide)`);
  await audit(phonePage, "phone width");
  await page.reload();
  await page.waitForSelector("#sessions li >> nth=2");
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, "account-desktop.png"), fullPage: true });
  await phonePage.screenshot({ path: path.join(SHOTS, "account-phone.png"), fullPage: true });

  // Sign out the Edge session from the desktop page, keyboard only: its tab learns it live.
  const t0 = Date.now();
  await tabTo(
    page,
    () => (document.activeElement?.getAttribute("aria-label") || "").startsWith("Sign out Edge"),
    "the Edge session's Sign out",
  );
  await page.keyboard.press("Enter");
  const took = await until(() => otherTab.evaluate(() => window.signedOut.length === 1), 3000, "the Edge tab signed out");
  // DELETE /auth/sessions/{id} revokes with the reason logout.
  assert.equal(await otherTab.evaluate(() => window.signedOut[0].reason), "logout");
  console.log(`the signed-out session's tab knew after ${took} ms (${Date.now() - t0} ms after Enter)`);
  assert.ok(took < 1500);
  await page.waitForFunction(() => document.querySelectorAll("#sessions li").length === 2);

  // Sign out all other sessions: the phone ends (live banner there), the desktop stays.
  await page.click("#sign-out-others");
  await phonePage.waitForSelector("#banner:not([hidden])", { timeout: 2000 });
  assert.match(await phonePage.textContent("#banner"), /signed out/i);
  assert.equal(await phonePage.isVisible("#signin"), true);
  await page.waitForFunction(() => document.querySelectorAll("#sessions li").length === 1);
  assert.equal(await page.isVisible("#account"), true);

  // Sign out everywhere, from a second tab of the desktop browser: the first tab's banner
  // appears live.
  const { page: second } = await accountPage(desktop);
  await second.waitForSelector("#account:not([hidden])");
  await second.click("#sign-out-everywhere");
  await page.waitForSelector("#banner:not([hidden])", { timeout: 2000 });
  assert.match(await page.textContent("#banner"), /everywhere/);
  assert.equal(await page.isVisible("#signin"), true);
  await audit(page, "signed out banner");

  assert.deepEqual(
    [...problems, ...phoneProblems].filter((p) => !/401|Failed to load resource/.test(p)),
    [],
    "no CSP violation or script error",
  );
  await Promise.all([other.close(), desktop.close(), phone.close()]);
});
