// Starts `latchkey serve` (the debug binary cargo built) on a fresh database of its own,
// with users, and stops it and drops the database afterwards.
import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const BINARY = process.env.LATCHKEY_BIN || path.join(ROOT, "target/debug/latchkey");
/** The server the databases are made on (the tests' default: trust auth on 127.0.0.1:5432). */
const SERVER = process.env.LATCHKEY_TEST_PG || "postgres://postgres@127.0.0.1:5432";
export const PASSWORD = "correct horse battery staple";

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function psql(url, sql) {
  return execFileSync("psql", ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql], {
    encoding: "utf8",
  }).trim();
}

/** A running service: `origin`, `db(sql)`, `addUser(email)`, `restart(downMs)`, `stop()`. */
export async function startService({ accessTtl = 2, extraArgs = [] } = {}) {
  const name = `latchkey_browser_${randomBytes(6).toString("hex")}`;
  const admin = `${SERVER}/postgres`;
  const url = `${SERVER}/${name}`;
  psql(admin, `CREATE DATABASE ${name}`);
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const env = {
    ...process.env,
    DATABASE_URL: url,
    LATCHKEY_JWT_SECRET: randomBytes(32).toString("base64"),
    RUST_LOG: process.env.RUST_LOG || "warn",
    NO_COLOR: "1",
  };
  const args = [
    "serve",
    "--bind", `127.0.0.1:${port}`,
    "--cookie-secure", "false",
    "--allowed-origins", origin,
    "--access-ttl-secs", String(accessTtl),
    "--events-keepalive-secs", "5",
    ...extraArgs,
  ];
  let child;
  let exited;
  let log = "";
  const run = async () => {
    child = spawn(BINARY, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    child.stderr.on("data", (d) => {
      log += d;
      if (process.env.LATCHKEY_BROWSER_LOG) process.stderr.write(d);
    });
    exited = new Promise((resolve) => child.once("exit", resolve));
    const deadline = Date.now() + 60000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`latchkey serve exited: ${log}`);
      try {
        const res = await fetch(`${origin}/readyz`);
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`latchkey serve did not become ready: ${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const halt = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
      await exited;
      clearTimeout(timer);
    }
  };
  await run();
  return {
    origin,
    url,
    db: (sql) => psql(url, sql),
    addUser(email) {
      execFileSync(BINARY, ["user", "add", "--email", email, "--password-stdin"], {
        env,
        input: `${PASSWORD}\n`,
        stdio: ["pipe", "ignore", "pipe"],
      });
    },
    /** Stops the service (SIGTERM: its streams end), waits `downMs`, starts it again. */
    async restart(downMs = 0) {
      await halt();
      await new Promise((r) => setTimeout(r, downMs));
      await run();
    },
    async stop() {
      await halt();
      psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}
