// The browser tests' world: the real sessiongate binary on one loopback
// origin, a static server for the pages on another (so every call is
// cross-origin, with CORS), and Debian's Chromium driven by playwright-core.
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = fileURLToPath(new URL(".", import.meta.url));
export const PACKAGE_ROOT = resolve(here, "../..");
const REPO_ROOT = resolve(PACKAGE_ROOT, "../..");
export const BIN = process.env.SESSIONGATE_BIN ? resolve(process.env.SESSIONGATE_BIN) : join(REPO_ROOT, "target/debug/sessiongate");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SECRET = "browser-secret-browser-secret-0123456789";

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json", ".json": "application/json" };

/** Serves the built package, the test pages, the bundled hook page and the example page. */
export async function startStatic() {
  const roots = {
    "/dist/": join(PACKAGE_ROOT, "dist"),
    "/pages/": join(here, "pages"),
    "/.build/": join(here, ".build"),
    // The example page, where it imports the package from in the repository.
    "/examples/web/": join(REPO_ROOT, "examples/web"),
    "/clients/web/dist/": join(PACKAGE_ROOT, "dist"),
  };
  const server = createServer(async (req, res) => {
    let path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (path.endsWith("/")) path += "index.html";
    const prefix = Object.keys(roots).find((p) => path.startsWith(p));
    const file = prefix && normalize(join(roots[prefix], path.slice(prefix.length)));
    if (!file || !file.startsWith(roots[prefix])) return res.writeHead(404).end();
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, close: () => new Promise((r) => server.close(r)) };
}

/** A free loopback port (the server needs one named before it starts). */
async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * The real server, allowing `pageOrigin`: sessions idle out after
 * `idleTtl`; `GET /v1/tool-sets` is limited to 2 per 2 s per user (the
 * 429 test waits it out), nothing else is limited.
 */
export async function startServer(pageOrigin, { idleTtl = "30m" } = {}) {
  if (!existsSync(BIN)) throw new Error(`no sessiongate binary at ${BIN}: cargo build first (or set SESSIONGATE_BIN)`);
  const port = await freePort();
  const env = {
    PATH: process.env.PATH,
    SESSIONGATE__SERVER__LISTEN: `127.0.0.1:${port}`,
    SESSIONGATE__SERVER__CORS_ALLOWED_ORIGINS: `["${pageOrigin}"]`,
    SESSIONGATE__AUTH__HS256_SECRET: SECRET,
    SESSIONGATE__SESSIONS__IDLE_TTL: idleTtl,
    SESSIONGATE__SESSIONS__REAPER_INTERVAL: "200ms",
    SESSIONGATE__RATE_LIMIT__PER_IP: "{per_second=0,burst=1}",
    SESSIONGATE__RATE_LIMIT__POLICIES: '[{name="tool-sets",limit=2,window="2s",routes=["GET /v1/tool-sets"]}]',
    SESSIONGATE__TELEMETRY__LOG_LEVEL: "warn",
  };
  const child = spawn(BIN, [], { env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sessiongate exited at start:\n${log}`);
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`sessiongate did not start on ${base}:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const token = (sub, ...roles) =>
    execFileSync(BIN, ["token", "--sub", sub, "--ttl", "1h", ...roles.flatMap((r) => ["--role", r])], {
      env: { PATH: process.env.PATH, SESSIONGATE__AUTH__HS256_SECRET: SECRET },
    })
      .toString()
      .trim();
  const admin = token("browser-tests-admin", "admin");
  return {
    base,
    token,
    log: () => log,
    /** A user's live sessions, as the server sees them. */
    async liveSessions(user) {
      const r = await fetch(`${base}/v1/admin/sessions?user=${encodeURIComponent(user)}`, {
        headers: { authorization: `Bearer ${admin}` },
      });
      if (!r.ok) throw new Error(`admin listing: ${r.status} ${await r.text()}`);
      return (await r.json()).sessions;
    },
    /** The sum of a metric's series whose labels contain every `labels` pair. */
    async metric(name, labels = {}) {
      const text = await (await fetch(`${base}/metrics`)).text();
      let sum = 0;
      for (const line of text.split("\n")) {
        if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
        if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(" ").pop());
      }
      return sum;
    },
    stop: () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r();
        child.once("exit", r);
        child.kill("SIGTERM");
      }),
  };
}

/** Debian's Chromium, headless, in a profile of its own. */
export async function startBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium`);
  const profile = mkdtempSync(join(tmpdir(), "sessiongate-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Polls `check` until it returns true, for at most `ms`. */
export async function eventually(check, ms = 5_000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
