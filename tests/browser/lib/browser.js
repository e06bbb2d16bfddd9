// Debian's Chromium driven by playwright-core (which never downloads a browser), and the
// page every tab of the tests runs: the client module loaded from the service itself.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root (CI) Chromium refuses its sandbox; the tests load only the service's pages.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/**
 * A context whose `/harness` page (a path the service does not have; answered by the test)
 * imports the client from the service's origin, so the page is same-origin with the API.
 */
export async function harnessContext(browser, origin, options = {}) {
  const context = await browser.newContext(options);
  await context.route(`${origin}/harness`, (route) =>
    route.fulfill({
      contentType: "text/html",
      body: `<!doctype html><html><head><meta charset="utf-8"><title>harness</title>
<script type="module">
  import { Latchkey } from "/auth/client.js";
  window.signedOut = [];
  window.makeClient = (opts) => {
    window.lk = new Latchkey({
      ...opts,
      onSignedOut: (reason) => window.signedOut.push({ reason, at: Date.now() }),
    });
    return window.lk.start();
  };
  window.harnessReady = true;
</script></head><body>harness</body></html>`,
    }),
  );
  return context;
}

/** Opens `n` harness pages of `context`, each with a client of `opts`. */
export async function openTabs(context, origin, n, opts) {
  const pages = [];
  for (let i = 0; i < n; i++) {
    const page = await context.newPage();
    await page.goto(`${origin}/harness`);
    await page.waitForFunction(() => window.harnessReady === true);
    await page.evaluate((o) => window.makeClient(o), opts);
    pages.push(page);
  }
  return pages;
}

/** Counts the requests of a context whose path is `pathname` (e.g. /auth/refresh). */
export function countRequests(context, pathname) {
  const counter = { n: 0 };
  context.on("request", (req) => {
    if (new URL(req.url()).pathname === pathname) counter.n++;
  });
  return counter;
}
