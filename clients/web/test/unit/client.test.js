// The client against a fake `fetch`, on mocked timers and a mocked clock:
// retry timing, idempotency keys, heartbeats, close, error mapping.
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import assert from "node:assert/strict";
import { SessionGate, SessionGateError } from "../../dist/index.js";
import { T0, empty, fakeFetch, json, problem, sessionView, settle } from "./fake.js";

const BASE = "https://api.example.test";
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: T0 });
});
afterEach(() => {
  mock.timers.reset();
});

const client = (fake, options = {}) => new SessionGate({ baseUrl: BASE, token: "tok", fetch: fake.fetch, ...options });

/** Starts `promise`, noting when it settles, so timing can be asserted step by step. */
function track(promise) {
  const t = { done: false, value: undefined, error: undefined };
  t.promise = promise.then(
    (v) => ((t.done = true), (t.value = v)),
    (e) => ((t.done = true), (t.error = e)),
  );
  return t;
}

/** Moves the mocked clock by `ms`, in steps, so timers set along the way fire too. */
async function tick(ms, step = 250) {
  for (let left = ms; left > 0; left -= step) {
    mock.timers.tick(Math.min(step, left));
    await settle();
  }
}

describe("retries", () => {
  it("waits out a 429 RATE_LIMITED for Retry-After seconds, never less", async () => {
    const fake = fakeFetch(
      problem(429, "RATE_LIMITED", { violated_policies: ["default"] }, { "retry-after": "2" }),
      json(200, { tool_sets: [{ name: "general", description: "d", tools: [] }] }),
    );
    const t = track(client(fake).toolSets());
    await settle();
    assert.equal(fake.calls.length, 1);
    await tick(1999);
    assert.equal(fake.calls.length, 1, "no retry before Retry-After");
    await tick(1);
    assert.equal(fake.calls.length, 2);
    assert.ok(fake.calls[1].at - fake.calls[0].at >= 2000);
    await t.promise;
    assert.deepEqual(t.value.map((s) => s.name), ["general"]);
  });

  it("retries a 503 with Retry-After, and gives up after maxAttempts", async () => {
    const fake = fakeFetch(problem(503, "OVERLOADED", {}, { "retry-after": "1" }));
    const t = track(client(fake, { maxAttempts: 3 }).sessions());
    await settle();
    await tick(999);
    assert.equal(fake.calls.length, 1);
    await tick(1);
    assert.equal(fake.calls.length, 2);
    await tick(1000);
    assert.equal(fake.calls.length, 3);
    await tick(5000);
    await t.promise;
    assert.equal(fake.calls.length, 3, "maxAttempts in all");
    assert.ok(t.error instanceof SessionGateError);
    assert.equal(t.error.code, "OVERLOADED");
    assert.equal(t.error.retryAfter, 1);
  });

  it("never retries 429 MAX_SESSIONS_EXCEEDED", async () => {
    const ids = ["0190f7d2-0000-7000-8000-00000000000a"];
    const fake = fakeFetch(problem(429, "MAX_SESSIONS_EXCEEDED", { live_session_ids: ids }, { "retry-after": "30" }));
    const t = track(client(fake).open("general"));
    await settle();
    await tick(60_000);
    await t.promise;
    assert.equal(fake.calls.length, 1);
    assert.equal(t.error.code, "MAX_SESSIONS_EXCEEDED");
    assert.equal(t.error.retryAfter, 30);
    assert.deepEqual(t.error.problem.live_session_ids, ids);
  });

  it("does not retry a 503 without Retry-After, nor a 4xx", async () => {
    for (const answer of [problem(503, "STORE_UNAVAILABLE"), problem(422, "UNKNOWN_TOOL_SET", { valid_tool_sets: ["general"] })]) {
      const fake = fakeFetch(answer);
      const t = track(client(fake).open("nope"));
      await settle();
      await tick(10_000);
      await t.promise;
      assert.equal(fake.calls.length, 1);
      assert.ok(t.error instanceof SessionGateError);
    }
  });
});

describe("idempotency", () => {
  it("reuses one Idempotency-Key across its own retries, and makes a new one per open", async () => {
    const fake = fakeFetch(
      problem(429, "RATE_LIMITED", {}, { "retry-after": "1" }),
      () => json(201, sessionView())(),
      () => json(201, sessionView({ id: "0190f7d2-0000-7000-8000-000000000002" }))(),
    );
    const gate = client(fake);
    const t = track(gate.open("general"));
    await settle();
    await tick(1000);
    await t.promise;
    assert.equal(fake.calls.length, 2);
    const [a, b] = fake.calls.map((c) => c.headers.get("idempotency-key"));
    assert.ok(a && a.length >= 16);
    assert.equal(a, b, "the retry carries the same key");
    const second = track(gate.open("general"));
    await settle();
    await second.promise;
    assert.notEqual(fake.calls[2].headers.get("idempotency-key"), a);
    for (const s of [t.value, second.value]) forget(s);
  });

  it("sends a given key as it is", async () => {
    const fake = fakeFetch(json(201, sessionView()));
    const s = await client(fake).open("general", { idempotencyKey: "order-42" });
    assert.equal(fake.calls[0].headers.get("idempotency-key"), "order-42");
    assert.deepEqual(JSON.parse(fake.calls[0].body), { tool_set: "general" });
    forget(s);
  });
});

/** Drops a session the test is done with: no heartbeat timer left behind. */
function forget(session) {
  session.markClosed();
}

describe("heartbeats", () => {
  it("heartbeats halfway through the idle window the server reported, and stops once closed", async () => {
    const view = sessionView(); // idle window 60 s
    const fake = fakeFetch(
      json(201, view),
      () => json(200, sessionView({ last_active_at: new Date(Date.now()).toISOString(), expires_at: new Date(Date.now() + 20_000).toISOString() }))(),
      empty(204),
    );
    const s = await client(fake).open("general");
    assert.equal(s.expiresAt.getTime(), T0 + 60_000);
    await tick(29_999);
    assert.equal(fake.calls.length, 1, "no heartbeat before half the idle window");
    await tick(1);
    assert.equal(fake.calls.length, 2);
    assert.equal(fake.calls[1].method, "POST");
    assert.equal(fake.calls[1].url, `${BASE}/v1/sessions/${view.id}/heartbeat`);
    assert.equal(s.expiresAt.getTime(), T0 + 30_000 + 20_000, "the answer's expiry is taken");
    // The next one is paced by the new window (20 s → every 10 s).
    await tick(9_999);
    assert.equal(fake.calls.length, 2);
    await s.close();
    assert.equal(fake.calls[2].method, "DELETE");
    await tick(120_000);
    assert.equal(fake.calls.length, 3, "no heartbeat after close");
    assert.equal(s.closed, true);
  });

  it("a heartbeat answered 404 (the session expired) stops the heartbeats", async () => {
    const fake = fakeFetch(json(201, sessionView()), problem(404, "NOT_FOUND"));
    const s = await client(fake).open("general");
    await tick(30_000);
    assert.equal(s.closed, true);
    await tick(120_000);
    assert.equal(fake.calls.length, 2);
  });
});

describe("close", () => {
  it("retries a failed close and treats 404 as closed", async () => {
    const fake = fakeFetch(
      json(201, sessionView()),
      problem(503, "STORE_UNAVAILABLE"),
      () => Promise.reject(new TypeError("Failed to fetch")),
      problem(404, "NOT_FOUND"),
    );
    const s = await client(fake).open("general");
    const t = track(s.close());
    await settle();
    await tick(10_000);
    await t.promise;
    assert.equal(t.error, undefined);
    assert.equal(s.closed, true);
    assert.deepEqual(fake.calls.slice(1).map((c) => c.method), ["DELETE", "DELETE", "DELETE"]);
  });

  it("a close that fails maxAttempts times rejects, and the session stays open to retry", async () => {
    const fake = fakeFetch(json(201, sessionView()), problem(500, "INTERNAL"), problem(500, "INTERNAL"), empty(204));
    const s = await client(fake, { maxAttempts: 2 }).open("general");
    const t = track(s.close());
    await settle();
    await tick(10_000);
    await t.promise;
    assert.equal(t.error.code, "INTERNAL");
    assert.equal(s.closed, false);
    await s.close();
    assert.equal(s.closed, true);
  });

  it("switchTo is a PATCH of the same session", async () => {
    const view = sessionView();
    const fake = fakeFetch(json(201, view), json(200, { ...view, tool_set: "research", migrations: 1 }), empty(204));
    const s = await client(fake).open("general");
    await s.switchTo("research");
    assert.equal(s.id, view.id);
    assert.equal(s.toolSet, "research");
    assert.equal(fake.calls[1].method, "PATCH");
    assert.equal(fake.calls[1].url, `${BASE}/v1/sessions/${view.id}`);
    assert.deepEqual(JSON.parse(fake.calls[1].body), { tool_set: "research" });
    await s.close();
  });
});

describe("errors", () => {
  it("maps a problem body to every field", async () => {
    const fake = fakeFetch(problem(422, "UNKNOWN_TOOL_SET", { valid_tool_sets: ["general"] }));
    const e = await client(fake).open("nope").catch((e) => e);
    assert.ok(e instanceof SessionGateError);
    assert.equal(e.status, 422);
    assert.equal(e.code, "UNKNOWN_TOOL_SET");
    assert.equal(e.title, "t");
    assert.equal(e.detail, "detail of UNKNOWN_TOOL_SET");
    assert.equal(e.requestId, "req-1");
    assert.equal(e.traceId, "0af7651916cd43dd8448eb211c80319c");
    assert.deepEqual(e.problem.valid_tool_sets, ["general"]);
    assert.equal(e.retryAfter, undefined);
  });

  it("maps a non-JSON error body instead of throwing a parse error", async () => {
    const fake = fakeFetch(() => new Response("<html>Bad Gateway</html>", { status: 502, headers: { "content-type": "text/html" } }));
    const e = await client(fake).sessions().catch((e) => e);
    assert.ok(e instanceof SessionGateError);
    assert.equal(e.status, 502);
    assert.equal(e.code, "UNEXPECTED_RESPONSE");
    assert.match(e.detail, /is it a sessiongate server/);
  });

  it("maps a 200 that is not JSON (not a sessiongate server)", async () => {
    const fake = fakeFetch(() => new Response("<!doctype html>", { status: 200 }));
    const e = await client(fake).toolSets().catch((e) => e);
    assert.equal(e.code, "UNEXPECTED_RESPONSE");
  });

  it("an unreachable server is a SessionGateError naming the URL", async () => {
    const fake = fakeFetch(() => Promise.reject(new TypeError("fetch failed")));
    const e = await client(fake).toolSets().catch((e) => e);
    assert.ok(e instanceof SessionGateError);
    assert.equal(e.status, 0);
    assert.equal(e.code, "NETWORK_ERROR");
    assert.ok(e.message.includes(BASE), e.message);
    assert.equal(fake.calls.length, 1, "a failed GET is not retried blindly");
  });

  it("a token function that throws surfaces its error", async () => {
    const fake = fakeFetch(json(200, { tool_sets: [] }));
    const boom = new Error("session expired, sign in again");
    const e = await client(fake, { token: () => Promise.reject(boom) }).toolSets().catch((e) => e);
    assert.ok(e instanceof SessionGateError);
    assert.equal(e.code, "TOKEN_UNAVAILABLE");
    assert.equal(e.cause, boom);
    assert.match(e.message, /sign in again/);
    assert.equal(fake.calls.length, 0);
  });

  it("asks a token function before every request", async () => {
    let n = 0;
    const fake = fakeFetch(json(200, { tool_sets: [] }));
    const gate = client(fake, { token: async () => `t${++n}` });
    await gate.toolSets();
    await gate.toolSets();
    assert.deepEqual(fake.calls.map((c) => c.headers.get("authorization")), ["Bearer t1", "Bearer t2"]);
  });

  it("rejects a missing baseUrl or token at once", () => {
    assert.throws(() => new SessionGate({ token: "t" }), TypeError);
    assert.throws(() => new SessionGate({ baseUrl: BASE }), TypeError);
  });
});

describe("tracing and rate limits", () => {
  it("every request carries a traceparent; retries keep the trace with a new span", async () => {
    const fake = fakeFetch(
      problem(429, "RATE_LIMITED", {}, { "retry-after": "1" }),
      json(200, { tool_sets: [] }, { ratelimit: '"default";r=41;t=17', "ratelimit-policy": '"default";q=600;w=60' }),
    );
    const gate = client(fake);
    const t = track(gate.toolSets());
    await settle();
    await tick(1000);
    await t.promise;
    const parsed = fake.calls.map((c) => TRACEPARENT.exec(c.headers.get("traceparent")));
    assert.ok(parsed.every(Boolean), "W3C traceparent on every request");
    assert.equal(parsed[0][1], parsed[1][1], "one trace per call");
    assert.notEqual(parsed[0][2], parsed[1][2], "one span per try");
    assert.deepEqual(gate.rateLimit, { limit: '"default";r=41;t=17', policy: '"default";q=600;w=60', remaining: 41, resetSeconds: 17 });
  });
});
