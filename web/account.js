// The account page: sign in, this session, where you're signed in, sign out one session,
// the others or all. Runs on latchkey's own client in cookie (stateful) mode.
import { Latchkey } from "./client.js";

const $ = (id) => document.getElementById(id);

const REASONS = {
  logout: "You were signed out.",
  logout_all: "You were signed out everywhere.",
  deleted: "This session was signed out from another device.",
  admin: "An administrator ended this session.",
  user_disabled: "This account has been disabled.",
  reuse_detected: "This session was ended because its token was used twice.",
  token_reused: "This session was ended because its token was used twice.",
  expired: "Your session expired.",
  token_expired: "Your session expired.",
  session_revoked: "This session was signed out from elsewhere.",
};

/** A readable device and browser from a User-Agent string. */
export function describeAgent(ua) {
  if (!ua) return { browser: "Unknown browser", os: "unknown device", kind: "device" };
  const pick = (rules) => rules.find(([re]) => re.test(ua))?.[1];
  const browser =
    pick([
      [/Edg(e|A|iOS)?\//, "Edge"],
      [/OPR\/|Opera/, "Opera"],
      [/SamsungBrowser\//, "Samsung Internet"],
      [/Firefox\/|FxiOS\//, "Firefox"],
      [/CriOS\/|Chrome\/|Chromium\//, "Chrome"],
      [/Version\/.*Safari\//, "Safari"],
      [/^curl\//, "curl"],
    ]) || "Unknown browser";
  const os =
    pick([
      [/iPhone/, "iPhone"],
      [/iPad/, "iPad"],
      [/Android/, "Android"],
      [/CrOS/, "ChromeOS"],
      [/Windows/, "Windows"],
      [/Mac OS X|Macintosh/, "macOS"],
      [/Linux/, "Linux"],
    ]) || "unknown system";
  const kind = /Mobile|iPhone|Android.*Mobile/.test(ua)
    ? "phone"
    : /iPad|Tablet|Android/.test(ua)
      ? "tablet"
      : "computer";
  return { browser, os, kind };
}

const when = (iso) => {
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? "unknown"
    : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
};

const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const c of children) node.append(c);
  return node;
};

function banner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

function show(signedIn) {
  $("loading").hidden = true;
  $("signin").hidden = signedIn;
  $("account").hidden = !signedIn;
}

const auth = new Latchkey({
  mode: "stateful",
  onSignedOut(reason) {
    banner(REASONS[reason] || `You were signed out (${reason}).`);
    show(false);
    $("sessions").replaceChildren();
    $("current").replaceChildren();
    $("email").focus();
  },
  onSignedIn() {
    render();
  },
});

function fact(dl, term, value) {
  dl.append(el("dt", { textContent: term }), el("dd", { textContent: value }));
}

let rendering = null;
async function render() {
  if (rendering) return rendering;
  rendering = (async () => {
    try {
      const sessions = await auth.sessions();
      show(true);
      // This device first, then the others, newest first (the server's order).
      const live = sessions
        .filter((s) => s.state === "active")
        .sort((a, b) => Number(b.current === true) - Number(a.current === true));
      const current = live.find((s) => s.current);
      const dl = $("current");
      dl.replaceChildren();
      if (current) {
        const a = describeAgent(current.user_agent);
        fact(dl, "Device", `${a.browser} on ${a.os}`);
        fact(dl, "IP address", current.ip || "unknown");
        fact(dl, "Signed in", when(current.created_at));
        fact(dl, "Last active", when(current.last_used_at));
      }
      const list = $("sessions");
      list.replaceChildren(
        ...live.map((s) => {
          const a = describeAgent(s.user_agent);
          const name = `${a.browser} on ${a.os}`;
          const title = el("div", { className: "device", textContent: name });
          if (s.current) title.append(el("span", { className: "badge", textContent: "This device" }));
          const meta = el("div", {
            className: "meta",
            textContent: `${s.ip || "unknown address"} · signed in ${when(s.created_at)} · last active ${when(s.last_used_at)}`,
          });
          const item = el("li", {}, el("div", {}, title, meta));
          item.dataset.sessionId = s.session_id;
          if (s.current) item.dataset.current = "true";
          else {
            const button = el("button", {
              type: "button",
              textContent: "Sign out",
              className: "revoke",
            });
            button.setAttribute("aria-label", `Sign out ${name}, ${s.ip || "unknown address"}`);
            button.addEventListener("click", () => revoke(s.session_id, button));
            item.append(button);
          }
          return item;
        }),
      );
      $("sign-out-others").disabled = live.length < 2;
      $("sessions-status").textContent =
        live.length === 1 ? "Only this device." : `${live.length} sessions.`;
    } catch (e) {
      if (auth.signedIn) $("sessions-status").textContent = "Could not load the sessions; retrying…";
    } finally {
      rendering = null;
    }
  })();
  return rendering;
}

async function revoke(id, button) {
  button.disabled = true;
  try {
    await auth.revokeSession(id);
    $("sessions-status").textContent = "Signed out that session.";
  } catch (e) {
    $("sessions-status").textContent = `Could not sign it out: ${e.message}`;
  }
  await render();
  $("sessions-title").focus?.();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  const error = $("signin-error");
  if (!email || !password) {
    error.textContent = "Enter your email and password.";
    return;
  }
  error.textContent = "";
  try {
    await auth.login({ email, password });
    $("password").value = "";
    banner("");
    await render();
    $("sign-out").focus();
  } catch (e) {
    error.textContent =
      e.code === "invalid_credentials"
        ? "That email and password do not match."
        : e.code === "rate_limited"
          ? `Too many attempts; try again in ${Math.ceil((e.retryAfterMs || 1000) / 1000)} s.`
          : `Could not sign in (${e.code}).`;
  }
});

$("sign-out").addEventListener("click", () => auth.logout().catch(() => {}));
$("sign-out-others").addEventListener("click", async () => {
  const n = await auth.logoutOthers().catch(() => null);
  $("sessions-status").textContent =
    n === null ? "Could not sign the other sessions out." : `Signed out ${n} other session(s).`;
  await render();
});
$("sign-out-everywhere").addEventListener("click", () => auth.logoutEverywhere().catch(() => {}));

// Keep the list current: on return to the tab and every 15 s while visible.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && auth.signedIn) render();
});
setInterval(() => {
  if (!document.hidden && auth.signedIn) render();
}, 15000);

const session = await auth.start().catch(() => null);
if (!session) show(false);
globalThis.latchkeyAccount = auth;
