// A fake `fetch` for the unit tests: answers from a script of handlers and
// records every request with the (mocked) time it was sent.
export const T0 = Date.parse("2026-11-25T10:00:00.000Z");

export function fakeFetch(...answers) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    const call = { url: String(url), method: init.method ?? "GET", headers, body: init.body, at: Date.now(), keepalive: init.keepalive };
    calls.push(call);
    const answer = answers.length > 1 ? answers.shift() : answers[0];
    if (!answer) throw new Error(`unexpected request ${call.method} ${call.url}`);
    return answer(call);
  };
  return { fetch, calls };
}

export const json = (status, body, headers = {}) => () =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

export const problem = (status, code, extra = {}, headers = {}) => () =>
  new Response(
    JSON.stringify({
      type: `urn:sessiongate:problem:${code.toLowerCase()}`,
      title: "t",
      status,
      detail: `detail of ${code}`,
      code,
      request_id: "req-1",
      trace_id: "0af7651916cd43dd8448eb211c80319c",
      ...extra,
    }),
    { status, headers: { "content-type": "application/problem+json", "x-request-id": "req-1", ...headers } },
  );

export const empty = (status) => () => new Response(null, { status });

export function sessionView(overrides = {}) {
  const at = new Date(Date.now()).toISOString();
  return {
    id: "0190f7d2-0000-7000-8000-000000000001",
    user_id: "alice",
    tool_set: "general",
    created_at: at,
    last_active_at: at,
    expires_at: new Date(Date.now() + 60_000).toISOString(),
    conversation_turns: 0,
    migrations: 0,
    ...overrides,
  };
}

/** Lets every settled promise run (setImmediate is not mocked). */
export async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}
