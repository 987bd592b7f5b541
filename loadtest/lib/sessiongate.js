// Shared by every script: configuration from the environment, HS256 tokens
// minted for many users (as `sessiongate token` does), and one function per
// API route. Every request goes through `api(method, route, ...)` with the
// route as the server's template (`/v1/sessions/{id}`): it is the request's
// `name` tag, so k6 groups metrics per route instead of per URL, and the test
// suite checks every route used here against the server's OpenAPI document.
//
// Environment:
//   BASE_URL      default http://127.0.0.1:8080
//   SG_SECRET     the server's auth.hs256_secret (required unless SG_TOKEN)
//   SG_ISSUER     default "sessiongate" (auth.issuer)
//   SG_AUDIENCE   default "sessiongate" (auth.audience)
//   SG_TOKEN      one ready-made token instead (every VU is then one user)
//   SG_TOKENS_FILE  a file of ready-made tokens, one per line (blank lines and
//                 lines starting with # skipped): VU n takes line n, in turn
//                 (for identity providers whose tokens k6 cannot mint). An
//                 absolute path is safest (k6 resolves a relative one from
//                 this library's folder)
//   SG_ADMIN_TOKEN  a ready-made token with the admin role, for the admin
//                 steps, beside SG_TOKEN or SG_TOKENS_FILE
//   USERS         how many distinct users tokens are minted for (default 1000)

import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const SECRET = __ENV.SG_SECRET || '';
const ISSUER = __ENV.SG_ISSUER || 'sessiongate';
const AUDIENCE = __ENV.SG_AUDIENCE || 'sessiongate';
export const USERS = parseInt(__ENV.USERS || '1000', 10);

// Read once, in the init context (the only place k6 can open files).
const TOKENS_FILE = __ENV.SG_TOKENS_FILE
  ? open(__ENV.SG_TOKENS_FILE)
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'))
  : null;
if (TOKENS_FILE !== null && TOKENS_FILE.length === 0) {
  throw new Error(`SG_TOKENS_FILE ${__ENV.SG_TOKENS_FILE} holds no token`);
}

const TOOL_SETS = ['general', 'research', 'coding'];

function b64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

/** An HS256 JWT for `sub`, valid for `ttlSeconds`. */
export function mintToken(sub, roles = [], ttlSeconds = 3600) {
  if (roles.includes('admin') && __ENV.SG_ADMIN_TOKEN) {
    return __ENV.SG_ADMIN_TOKEN;
  }
  if (__ENV.SG_TOKEN) {
    return __ENV.SG_TOKEN;
  }
  if (TOKENS_FILE !== null) {
    return TOKENS_FILE[0];
  }
  if (!SECRET) {
    throw new Error(
      'set SG_SECRET to the server\'s auth.hs256_secret (or SG_TOKEN to one token, or SG_TOKENS_FILE to a file of them)',
    );
  }
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(
    JSON.stringify({ sub, iss: ISSUER, aud: AUDIENCE, iat: now, nbf: now, exp: now + ttlSeconds, roles }),
  );
  const signature = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${signature}`;
}

/**
 * Tokens for users `load-0` … `load-(n-1)`, minted once (call from setup());
 * with SG_TOKENS_FILE, the file's tokens instead (however many it holds).
 */
export function mintTokens(n = USERS, ttlSeconds = 3600) {
  if (TOKENS_FILE !== null && !__ENV.SG_TOKEN) {
    return TOKENS_FILE.slice();
  }
  const tokens = [];
  for (let i = 0; i < n; i++) {
    tokens.push(mintToken(`load-${i}`, [], ttlSeconds));
  }
  return tokens;
}

/** The token of this VU's user (VUs share users when there are more VUs). */
export function tokenFor(tokens) {
  return tokens[(__VU - 1) % tokens.length];
}

export function pickToolSet(exclude) {
  const choices = TOOL_SETS.filter((t) => t !== exclude);
  return choices[Math.floor(Math.random() * choices.length)];
}

/**
 * One API call. `route` is the server's route template; `params` fills its
 * `{placeholders}`. `expected` are the statuses this call may answer with
 * (others count as failed in `http_req_failed`).
 */
export function api(method, route, { token, params = {}, body = null, headers = {}, expected = [200] } = {}) {
  const url = BASE_URL + route.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(params[k]));
  const h = Object.assign({}, headers);
  if (token) {
    h.Authorization = `Bearer ${token}`;
  }
  if (body !== null) {
    h['Content-Type'] = 'application/json';
  }
  return http.request(method, url, body === null ? null : JSON.stringify(body), {
    headers: h,
    tags: { name: `${method} ${route}` },
    responseCallback: http.expectedStatuses(...expected),
  });
}

export const listToolSets = (token) => api('GET', '/v1/tool-sets', { token });

export const createSession = (token, toolSet, extra = {}) =>
  api('POST', '/v1/sessions', Object.assign({ token, body: { tool_set: toolSet }, expected: [201] }, extra));

export const listSessions = (token) => api('GET', '/v1/sessions', { token });

export const getSession = (token, id) => api('GET', '/v1/sessions/{id}', { token, params: { id } });

export const query = (token, id, input) =>
  api('POST', '/v1/sessions/{id}/queries', { token, params: { id }, body: { input } });

export const migrate = (token, id, toolSet) =>
  api('PATCH', '/v1/sessions/{id}', { token, params: { id }, body: { tool_set: toolSet } });

export const heartbeat = (token, id) =>
  api('POST', '/v1/sessions/{id}/heartbeat', { token, params: { id }, body: {} });

export const deleteSession = (token, id, expected = [204]) =>
  api('DELETE', '/v1/sessions/{id}', { token, params: { id }, expected });

/** Seconds to wait before retrying a 429: its Retry-After, at least 1 s. */
export function retryAfterSeconds(res) {
  const v = parseInt(res.headers['Retry-After'] || '1', 10);
  return Number.isFinite(v) && v > 0 ? v : 1;
}
