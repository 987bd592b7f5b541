// The client in Debian's Chromium against the real server on another
// origin: the whole session flow, switches, tracing and the preflight,
// heartbeats, the close on page exit, a 429 waited out, and the React hook.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { build } from "esbuild";
import { eventually, startBrowser, startServer, startStatic } from "./harness.js";

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/;
let statics, server, browser;

before(async () => {
  const here = new URL(".", import.meta.url).pathname;
  await build({
    entryPoints: [join(here, "pages/hook-app.js")],
    bundle: true,
    format: "iife",
    outfile: join(here, ".build/hook.js"),
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  statics = await startStatic();
  // A short idle TTL: only heartbeats keep a session alive past 2 s.
  server = await startServer(statics.origin, { idleTtl: "2s" });
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await statics?.close();
});

/** A fresh page of the client-test origin, with every request it sends recorded. */
async function page(path = "/pages/client.html") {
  const p = await browser.context.newPage();
  const requests = [];
  p.on("request", (r) => requests.push(r));
  p.on("pageerror", (e) => console.error("page error:", e));
  await p.goto(statics.origin + path);
  if (path.endsWith("client.html")) await p.waitForFunction(() => window.sgReady === true);
  return { page: p, requests };
}

describe("in Chromium, cross-origin", () => {
  it("open → switch → query → close leaves nothing on the server", async () => {
    const user = "flow";
    const { page: p } = await page();
    const out = await p.evaluate(
      async ({ base, token }) => {
        const gate = new window.sg.SessionGate({ baseUrl: base, token });
        const s = await gate.open("general");
        const id = s.id;
        await s.switchTo("research");
        const answer = await s.query("hello");
        await s.close();
        return { id, after: s.id, toolSet: s.toolSet, answer, closed: s.closed, expires: s.expiresAt instanceof Date };
      },
      { base: server.base, token: server.token(user) },
    );
    assert.equal(out.id, out.after);
    assert.equal(out.toolSet, "research");
    assert.equal(out.answer.session_id, out.id);
    assert.equal(out.answer.tool_set, "research");
    assert.equal(out.answer.turn, 1);
    assert.equal(out.closed, true);
    assert.equal(out.expires, true);
    assert.deepEqual(await server.liveSessions(user), []);
    await p.close();
  });

  it("twenty switches leave one session, created once", async () => {
    const user = "switcher";
    const created = await server.metric("sessiongate_sessions_created_total");
    const { page: p } = await page();
    const out = await p.evaluate(
      async ({ base, token }) => {
        const gate = new window.sg.SessionGate({ baseUrl: base, token });
        const s = (window.switched = await gate.open("general"));
        const sets = ["research", "coding", "general"];
        for (let i = 0; i < 20; i++) await s.switchTo(sets[i % 3]);
        return { id: s.id, migrations: s.view.migrations, toolSet: s.toolSet, listed: (await gate.sessions()).map((x) => x.id) };
      },
      { base: server.base, token: server.token(user) },
    );
    assert.equal(out.migrations, 20);
    assert.deepEqual(out.listed, [out.id]);
    const live = await server.liveSessions(user);
    assert.deepEqual(live.map((s) => s.id), [out.id]);
    assert.equal(live[0].tool_set, out.toolSet);
    assert.equal((await server.metric("sessiongate_sessions_created_total")) - created, 1, "created once");
    await p.evaluate(() => window.switched.close());
    assert.deepEqual(await server.liveSessions(user), []);
    await p.close();
  });

  it("every request carries a traceparent and the preflight passes", async () => {
    const user = "tracer";
    const preflights = await server.metric("http_server_request_duration_seconds_count", { http_request_method: "OPTIONS" });
    const { page: p, requests } = await page();
    await p.evaluate(
      async ({ base, token }) => {
        const gate = new window.sg.SessionGate({ baseUrl: base, token });
        const s = await gate.open("general");
        await s.query("traced?");
        await s.heartbeat();
        await s.close();
      },
      { base: server.base, token: server.token(user) },
    );
    const api = requests.filter((r) => r.url().startsWith(server.base));
    assert.ok(api.length >= 4, `${api.length} API requests`);
    for (const r of api) {
      const headers = await r.allHeaders();
      assert.match(headers.traceparent ?? "", TRACEPARENT, `${r.method()} ${r.url()}`);
    }
    // The preflights reached the server and were answered (the calls
    // themselves, which need them, all succeeded).
    const now = await server.metric("http_server_request_duration_seconds_count", { http_request_method: "OPTIONS" });
    assert.ok(now > preflights, "preflights were sent and answered");
    assert.equal(await server.metric("http_server_request_duration_seconds_count", { http_request_method: "OPTIONS", http_response_status_code: "403" }), 0);
    await p.close();
  });

  it("heartbeats keep a session with a 2 s idle TTL alive", async () => {
    const user = "idler";
    const { page: p } = await page();
    const id = await p.evaluate(
      async ({ base, token }) => {
        const gate = new window.sg.SessionGate({ baseUrl: base, token });
        window.kept = await gate.open("general");
        return window.kept.id;
      },
      { base: server.base, token: server.token(user) },
    );
    const beats = await server.metric("sessiongate_session_heartbeats_total");
    // Three idle TTLs without a call of the page's own.
    await new Promise((r) => setTimeout(r, 6_000));
    assert.deepEqual((await server.liveSessions(user)).map((s) => s.id), [id], "still alive");
    assert.ok((await server.metric("sessiongate_session_heartbeats_total")) - beats >= 3, "kept alive by heartbeats");
    await p.evaluate(() => window.kept.close());
    assert.deepEqual(await server.liveSessions(user), []);
    await p.close();
  });

  it("navigating away closes every open session with keepalive requests", async () => {
    const user = "leaver";
    const deleted = () => server.metric("sessiongate_sessions_ended_total", { reason: "deleted" });
    const before = await deleted();
    const { page: p } = await page();
    await p.evaluate(
      async ({ base, token }) => {
        // Notes each DELETE's keepalive flag where the next page of this
        // origin can read it.
        const noting = (input, init = {}) => {
          if (init.method === "DELETE") {
            const seen = JSON.parse(sessionStorage.getItem("deletes") ?? "[]");
            sessionStorage.setItem("deletes", JSON.stringify([...seen, { keepalive: init.keepalive === true }]));
          }
          return fetch(input, init);
        };
        const gate = new window.sg.SessionGate({ baseUrl: base, token, fetch: noting });
        window.held = [await gate.open("general"), await gate.open("research")];
      },
      { base: server.base, token: server.token(user) },
    );
    assert.equal((await server.liveSessions(user)).length, 2);
    await p.goto(statics.origin + "/pages/client.html?next");
    // Deleted, not expired (the idle TTL would end them too, a little later).
    await eventually(async () => (await deleted()) - before === 2, 5_000, "two DELETEs to reach the server");
    assert.deepEqual(await server.liveSessions(user), []);
    const notes = await p.evaluate(() => JSON.parse(sessionStorage.getItem("deletes") ?? "[]"));
    assert.deepEqual(notes, [{ keepalive: true }, { keepalive: true }]);
    await p.close();
  });

  it("a 429 RATE_LIMITED is waited out for Retry-After and then succeeds", async () => {
    const user = "limited";
    const { page: p } = await page();
    const out = await p.evaluate(
      async ({ base, token }) => {
        const seen = [];
        const recording = async (input, init) => {
          const at = performance.now();
          const r = await fetch(input, init);
          seen.push({ at, status: r.status, retryAfter: r.headers.get("retry-after") });
          return r;
        };
        const gate = new window.sg.SessionGate({ baseUrl: base, token, fetch: recording });
        const names = [];
        for (let i = 0; i < 3; i++) names.push((await gate.toolSets()).length);
        return { seen, names, rateLimit: gate.rateLimit };
      },
      { base: server.base, token: server.token(user) },
    );
    const refused = out.seen.findIndex((s) => s.status === 429);
    assert.ok(refused >= 0, JSON.stringify(out.seen));
    const wait = Number(out.seen[refused].retryAfter);
    assert.ok(wait >= 1, "Retry-After was readable cross-origin");
    const retry = out.seen[refused + 1];
    assert.equal(retry.status, 200);
    assert.ok(retry.at - out.seen[refused].at >= wait * 1000, "never before Retry-After");
    assert.deepEqual(out.names, [3, 3, 3]);
    assert.ok(out.rateLimit && out.rateLimit.limit.includes("tool-sets"), JSON.stringify(out.rateLimit));
    await p.close();
  });

  it("useSession: mount opens, a toolSet change PATCHes, unmount closes", async () => {
    const user = "hooked";
    const created = await server.metric("sessiongate_sessions_created_total");
    const { page: p, requests } = await page("/pages/hook.html");
    await p.evaluate(({ base, token }) => window.startHook(base, token), { base: server.base, token: server.token(user) });
    await p.waitForFunction(() => window.hookStates.at(-1)?.status === "open");
    const opened = await p.evaluate(() => window.hookStates.at(-1));
    assert.equal(opened.toolSet, "general");
    assert.ok((await p.evaluate(() => window.hookStates.map((s) => s.status))).includes("opening"));
    await p.evaluate(() => window.setToolSet("research"));
    await p.waitForFunction(() => window.hookStates.at(-1)?.status === "open" && window.hookStates.at(-1)?.toolSet === "research");
    const states = await p.evaluate(() => window.hookStates.map((s) => s.status));
    assert.ok(states.includes("switching"), states.join(","));
    const live = await server.liveSessions(user);
    assert.deepEqual(live.map((s) => [s.id, s.tool_set, s.migrations]), [[opened.id, "research", 1]]);
    const api = requests.filter((r) => r.url().startsWith(server.base));
    assert.deepEqual(api.map((r) => r.method()).filter((m) => m !== "OPTIONS"), ["POST", "PATCH"]);
    await p.evaluate(() => window.unmount());
    await eventually(async () => (await server.liveSessions(user)).length === 0, 5_000, "the hook's session to close");
    assert.equal((await server.metric("sessiongate_sessions_created_total")) - created, 1);
    await p.close();
  });

  it("the example page signs in, opens, switches, queries, shows expiry and RateLimit, and shows errors with ids", async () => {
    const user = "example";
    const { page: p } = await page("/examples/web/");
    await p.fill("#base", server.base);
    await p.fill("#token", server.token(user));
    await p.click("#signin");
    await p.waitForFunction(() => document.querySelectorAll("#toolsets option").length === 3);
    await p.selectOption("#toolsets", "general");
    await p.click("#open");
    await p.waitForFunction(() => document.getElementById("session").textContent !== "none");
    await p.selectOption("#toolsets", "coding");
    await p.click("#switch");
    await p.waitForFunction(() => document.getElementById("toolset").textContent === "coding");
    await p.fill("#input", "hello from the example");
    await p.click("#query");
    await p.waitForFunction(() => document.getElementById("output").textContent.startsWith("turn 1 (coding"));
    assert.match(await p.textContent("#expires"), /in \d+ s/);
    assert.match(await p.textContent("#ratelimit"), /tool-sets/);
    const [live] = await server.liveSessions(user);
    assert.equal(await p.textContent("#session"), live.id);
    await p.click("#close");
    await p.waitForFunction(() => document.getElementById("session").textContent === "none");
    assert.deepEqual(await server.liveSessions(user), []);
    // A tool set that does not exist: the problem, with its ids, on the page.
    await p.evaluate(() => document.getElementById("toolsets").append(new Option("nope", "nope")));
    await p.selectOption("#toolsets", "nope");
    await p.click("#open");
    await p.waitForFunction(() => document.getElementById("error").textContent.includes("UNKNOWN_TOOL_SET"));
    const error = await p.textContent("#error");
    assert.match(error, /request_id: \S+/);
    assert.match(error, /trace_id: [0-9a-f]{32}/);
    await p.close();
  });
});
