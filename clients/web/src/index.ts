// @sessiongate/client: agent sessions from the browser, over `fetch` alone.
//
// What it gets right that hand-written clients got wrong: a tool-set switch
// is a PATCH of the same session (never delete + create), a close is retried
// until the server confirms it (a 404 counts as closed), a retried create
// reuses its Idempotency-Key so it never makes two sessions, and a 429 or
// 503 is retried only after the server's Retry-After, never earlier.
// Types come from the server's OpenAPI document (`npm run generate`).

import type { components } from "./schema.js";

type Schemas = components["schemas"];
export type SessionView = Schemas["SessionView"];
export type ToolSet = Schemas["ToolSetView"];
export type QueryResult = Schemas["QueryResponse"];
export type Problem = Schemas["Problem"];
export type ProblemCode = Schemas["ProblemCode"];

/** Codes of failures that never reached a sessiongate answer. */
export type ClientErrorCode =
  /** `fetch` itself failed: the server is unreachable, or CORS refused the call. */
  | "NETWORK_ERROR"
  /** An answer came, but not sessiongate's (another server, a proxy's page). */
  | "UNEXPECTED_RESPONSE"
  /** The `token` function threw or rejected; `cause` holds its error. */
  | "TOKEN_UNAVAILABLE";

export type TokenSource = string | (() => string | Promise<string>);

export interface SessionGateOptions {
  /** Where sessiongate serves, e.g. `https://api.example.com`. */
  baseUrl: string;
  /** A bearer token, or a function asked for one before every request. */
  token: TokenSource;
  /** Tries in all for a request refused with a retryable 429 or 503. Default 3. */
  maxAttempts?: number;
  /** The `fetch` to call; the global one by default. */
  fetch?: typeof fetch;
}

/** The `RateLimit` state of the latest answer that reported one. */
export interface RateLimitState {
  /** `RateLimit`, e.g. `"default";r=42;t=17`. */
  limit: string;
  /** `RateLimit-Policy`, e.g. `"default";q=600;w=60`. */
  policy: string | null;
  /** Requests left in the most constrained policy, when `r` was given. */
  remaining: number | null;
  /** Seconds until it resets, when `t` was given. */
  resetSeconds: number | null;
}

/** Every failure the client reports. */
export class SessionGateError extends Error {
  override readonly name = "SessionGateError";
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  readonly code: ProblemCode | ClientErrorCode;
  readonly title: string;
  readonly detail: string;
  /** Seconds from `Retry-After`, when the answer had one. */
  readonly retryAfter: number | undefined;
  readonly requestId: string | undefined;
  readonly traceId: string | undefined;
  /** The whole problem+json body, when the server sent one. */
  readonly problem: Problem | undefined;

  constructor(init: {
    status: number;
    code: ProblemCode | ClientErrorCode;
    title: string;
    detail: string;
    retryAfter?: number;
    requestId?: string;
    traceId?: string;
    problem?: Problem;
    cause?: unknown;
  }) {
    super(`${init.code}: ${init.detail}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.title = init.title;
    this.detail = init.detail;
    this.retryAfter = init.retryAfter;
    this.requestId = init.requestId;
    this.traceId = init.traceId;
    this.problem = init.problem;
  }
}

interface Call {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  path: string;
  body?: unknown;
  idempotencyKey?: string;
  /** Also retry network failures and 5xx (for idempotent calls: close). */
  retryFailures?: boolean;
}

const randomHex = (bytes: number): string => {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
};

/** A W3C trace context header: a new span (`parent-id`) of `traceId`, sampled. */
export function traceparent(traceId: string = randomHex(16)): string {
  return `00-${traceId}-${randomHex(8)}-01`;
}

const uuid = (): string =>
  typeof crypto.randomUUID === "function"
    ? crypto.randomUUID()
    : randomHex(16).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");

/** Waits `ms`, never less, whatever the timer's rounding. */
async function sleepAtLeast(ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (let left = ms; left > 0; left = until - Date.now()) {
    await new Promise((resolve) => setTimeout(resolve, left));
  }
}

/** `Retry-After` as seconds (the delta form sessiongate sends; an HTTP date too). */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

function parseRateLimit(headers: Headers): RateLimitState | null {
  const limit = headers.get("RateLimit");
  if (limit === null) return null;
  const param = (name: string) => {
    const m = new RegExp(`;\\s*${name}=(\\d+)`).exec(limit);
    return m ? Number(m[1]) : null;
  };
  return { limit, policy: headers.get("RateLimit-Policy"), remaining: param("r"), resetSeconds: param("t") };
}

/** Whether the client's own retries may try a refused call again. */
function retryable(e: SessionGateError, call: Call): boolean {
  if (e.status === 429) return e.code === "RATE_LIMITED" && e.retryAfter !== undefined;
  if (e.status === 503) return e.retryAfter !== undefined || call.retryFailures === true;
  return call.retryFailures === true && (e.status === 0 || e.status >= 500);
}

/** The client: one per signed-in user, shared by every session it opens. */
export class SessionGate {
  readonly baseUrl: string;
  readonly maxAttempts: number;
  /** The latest `RateLimit` state the server reported, or null. */
  rateLimit: RateLimitState | null = null;
  private readonly token: TokenSource;
  private readonly fetchImpl: typeof fetch;
  /** The latest token obtained: the page-exit close cannot wait for a new one. */
  private lastToken: string | undefined;
  private readonly open_ = new Set<Session>();
  private exitHook: (() => void) | undefined;

  constructor(options: SessionGateOptions) {
    if (!options || typeof options.baseUrl !== "string" || options.baseUrl === "") {
      throw new TypeError("SessionGate: baseUrl must be the server's URL, e.g. https://api.example.com");
    }
    if (typeof options.token !== "string" && typeof options.token !== "function") {
      throw new TypeError("SessionGate: token must be a string or a function returning one");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 3));
    const f = options.fetch ?? globalThis.fetch;
    // Called unbound: a browser's `fetch` refuses another `this`.
    this.fetchImpl = (input, init) => f(input, init);
  }

  /** The configured tool sets. */
  async toolSets(): Promise<ToolSet[]> {
    const list = await this.call<Schemas["ToolSetList"]>({ method: "GET", path: "/v1/tool-sets" });
    return list.tool_sets;
  }

  /** The caller's live sessions (expired ones never appear). */
  async sessions(): Promise<SessionView[]> {
    const list = await this.call<Schemas["SessionList"]>({ method: "GET", path: "/v1/sessions" });
    return list.sessions;
  }

  /**
   * Opens a session on `toolSet`. The Idempotency-Key (generated when not
   * given) is the same on every retry, so a retried create never makes two.
   */
  async open(toolSet: string, options: { idempotencyKey?: string } = {}): Promise<Session> {
    const view = await this.call<SessionView>({
      method: "POST",
      path: "/v1/sessions",
      body: { tool_set: toolSet },
      idempotencyKey: options.idempotencyKey ?? uuid(),
    });
    const session = new Session(this, view);
    this.open_.add(session);
    this.watchPageExit();
    return session;
  }

  /** The sessions this client opened and has not seen closed. */
  get openSessions(): readonly Session[] {
    return [...this.open_];
  }

  /** @internal A session ended: no more heartbeats, no close on page exit. */
  forget(session: Session): void {
    this.open_.delete(session);
  }

  /** On `pagehide`, closes every open session with a keepalive request. */
  private watchPageExit(): void {
    if (this.exitHook || typeof window === "undefined" || typeof window.addEventListener !== "function") return;
    this.exitHook = () => this.closeAllOnExit();
    window.addEventListener("pagehide", this.exitHook);
  }

  /**
   * The page is going away: a `keepalive` DELETE per open session, sent at
   * once (no await can be trusted to resume now), with the latest token.
   */
  closeAllOnExit(): void {
    const token = typeof this.token === "string" ? this.token : this.lastToken;
    for (const session of this.open_) {
      const headers: Record<string, string> = { traceparent: traceparent() };
      if (token !== undefined) headers.Authorization = `Bearer ${token}`;
      session.markClosed();
      try {
        void this.fetchImpl(`${this.baseUrl}/v1/sessions/${encodeURIComponent(session.id)}`, {
          method: "DELETE",
          headers,
          keepalive: true,
          mode: "cors",
        }).catch(() => undefined);
      } catch {
        // Nothing can be reported from a page that is leaving.
      }
    }
    this.open_.clear();
  }

  private async bearer(): Promise<string> {
    if (typeof this.token === "string") return this.token;
    let token: string;
    try {
      token = await this.token();
    } catch (cause) {
      const why = cause instanceof Error ? cause.message : String(cause);
      throw new SessionGateError({
        status: 0,
        code: "TOKEN_UNAVAILABLE",
        title: "Token unavailable",
        detail: `the token function failed: ${why}`,
        cause,
      });
    }
    if (typeof token !== "string" || token === "") {
      throw new SessionGateError({
        status: 0,
        code: "TOKEN_UNAVAILABLE",
        title: "Token unavailable",
        detail: "the token function returned no token",
      });
    }
    this.lastToken = token;
    return token;
  }

  /**
   * @internal One call, with the client's retries: after `Retry-After`
   * (never earlier) for a 429 RATE_LIMITED or a 503 that carries one, up to
   * `maxAttempts` in all. One trace per call, one span per try.
   */
  async call<T>(call: Call): Promise<T> {
    const traceId = randomHex(16);
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.once<T>(call, traceId);
      if (!(outcome instanceof SessionGateError)) return outcome;
      if (attempt >= this.maxAttempts || !retryable(outcome, call)) throw outcome;
      const wait = outcome.retryAfter ?? Math.min(4, 0.25 * 2 ** (attempt - 1));
      await sleepAtLeast(wait * 1000);
    }
  }

  /** One try: the answer's body, or the error it maps to. */
  private async once<T>(call: Call, traceId: string): Promise<T | SessionGateError> {
    const token = await this.bearer();
    const headers: Record<string, string> = {
      Authorization: `Bearer ${token}`,
      Accept: "application/json, application/problem+json",
      traceparent: traceparent(traceId),
    };
    if (call.body !== undefined) headers["Content-Type"] = "application/json";
    if (call.idempotencyKey !== undefined) headers["Idempotency-Key"] = call.idempotencyKey;
    const url = `${this.baseUrl}${call.path}`;
    let response: Response;
    try {
      response = await this.fetchImpl(url, {
        method: call.method,
        headers,
        body: call.body === undefined ? undefined : JSON.stringify(call.body),
        mode: "cors",
      });
    } catch (cause) {
      const why = cause instanceof Error ? cause.message : String(cause);
      return new SessionGateError({
        status: 0,
        code: "NETWORK_ERROR",
        title: "Network error",
        detail:
          `could not reach sessiongate at ${this.baseUrl} (${call.method} ${call.path}): ${why}. ` +
          "Is the URL right, is the server up, and does its server.cors_allowed_origins list this page's origin?",
        traceId,
        cause,
      });
    }
    const rateLimit = parseRateLimit(response.headers);
    if (rateLimit) this.rateLimit = rateLimit;
    if (response.ok) {
      if (response.status === 204) return undefined as T;
      const text = await response.text();
      try {
        return JSON.parse(text) as T;
      } catch {
        return this.unexpected(response, traceId, `a ${response.status} answer that is not JSON`);
      }
    }
    return this.toError(response, traceId);
  }

  private async toError(response: Response, traceId: string): Promise<SessionGateError> {
    const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
    const requestId = response.headers.get("X-Request-Id") ?? undefined;
    const text = await response.text().catch(() => "");
    let problem: Problem | undefined;
    try {
      const body: unknown = JSON.parse(text);
      if (body && typeof body === "object" && typeof (body as Problem).code === "string") problem = body as Problem;
    } catch {
      problem = undefined;
    }
    if (!problem) {
      return this.unexpected(response, traceId, `a ${response.status} answer without a problem+json body`, retryAfter);
    }
    return new SessionGateError({
      status: response.status,
      code: problem.code,
      title: problem.title ?? response.statusText,
      detail: problem.detail ?? "",
      retryAfter,
      requestId: problem.request_id ?? requestId,
      traceId: problem.trace_id ?? traceId,
      problem,
    });
  }

  private unexpected(response: Response, traceId: string, what: string, retryAfter?: number): SessionGateError {
    return new SessionGateError({
      status: response.status,
      code: "UNEXPECTED_RESPONSE",
      title: response.statusText || "Unexpected response",
      detail: `${this.baseUrl} sent ${what}: is it a sessiongate server?`,
      retryAfter,
      requestId: response.headers.get("X-Request-Id") ?? undefined,
      traceId,
    });
  }
}

/** Least time between two heartbeats, and the earliest one after an answer. */
const MIN_HEARTBEAT_MS = 250;

/** One open agent session. */
export class Session {
  readonly id: string;
  /** The latest view of the session the server sent. */
  view: SessionView;
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private closed_ = false;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly client: SessionGate,
    view: SessionView,
  ) {
    this.id = view.id;
    this.view = view;
    this.schedule();
  }

  get toolSet(): string {
    return this.view.tool_set;
  }

  /** When the session expires unless used (a heartbeat is sent before). */
  get expiresAt(): Date {
    return new Date(this.view.expires_at);
  }

  /** Closed by `close()`, by the page exit, or found expired. */
  get closed(): boolean {
    return this.closed_;
  }

  /** Switches to another tool set in place: same id, conversation reset. */
  async switchTo(toolSet: string): Promise<Session> {
    this.ensureOpen();
    this.update(await this.client.call<SessionView>({ method: "PATCH", path: this.path(), body: { tool_set: toolSet } }));
    return this;
  }

  /** Runs a query through the agent. */
  async query(input: string): Promise<QueryResult> {
    this.ensureOpen();
    try {
      return await this.client.call<QueryResult>({ method: "POST", path: `${this.path()}/queries`, body: { input } });
    } catch (e) {
      this.notFoundCloses(e);
      throw e;
    }
  }

  /** Extends the idle expiry now (the client also does it on its own). */
  async heartbeat(): Promise<Session> {
    this.ensureOpen();
    try {
      this.update(await this.client.call<SessionView>({ method: "POST", path: `${this.path()}/heartbeat` }));
    } catch (e) {
      this.notFoundCloses(e);
      throw e;
    }
    return this;
  }

  /** Ends the session; retried until the server confirms (a 404 counts as closed). */
  close(): Promise<void> {
    if (this.closed_) return Promise.resolve();
    this.closing ??= this.client
      .call<void>({ method: "DELETE", path: this.path(), retryFailures: true })
      .catch((e: unknown) => {
        if (!(e instanceof SessionGateError && e.status === 404)) {
          this.closing = undefined;
          throw e;
        }
      })
      .then(() => this.markClosed());
    return this.closing;
  }

  /** @internal No more requests from this object. */
  markClosed(): void {
    this.closed_ = true;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    this.client.forget(this);
  }

  private path(): string {
    return `/v1/sessions/${encodeURIComponent(this.id)}`;
  }

  private ensureOpen(): void {
    if (this.closed_) {
      throw new SessionGateError({
        status: 404,
        code: "NOT_FOUND",
        title: "Not Found",
        detail: `session ${this.id} is closed`,
      });
    }
  }

  /** A 404 means the session is gone (expired, revoked): stop heartbeating it. */
  private notFoundCloses(e: unknown): void {
    if (e instanceof SessionGateError && e.status === 404) this.markClosed();
  }

  private update(view: SessionView): void {
    this.view = view;
    this.schedule();
  }

  /**
   * The next heartbeat: halfway through the idle window the server reported
   * (`expires_at - last_active_at`, both on the server's clock, so a skewed
   * client clock does not matter), counted from when the answer arrived.
   */
  private schedule(): void {
    clearTimeout(this.heartbeatTimer);
    if (this.closed_) return;
    const idle = Date.parse(this.view.expires_at) - Date.parse(this.view.last_active_at);
    const delay = Math.max(MIN_HEARTBEAT_MS, Number.isFinite(idle) ? idle / 2 : MIN_HEARTBEAT_MS);
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeat().catch(() => {
        // A failed heartbeat (other than the 404 that closes) tries again
        // at the same pace; the session's own expiry is the judge.
        if (!this.closed_) this.schedule();
      });
    }, delay);
  }
}
