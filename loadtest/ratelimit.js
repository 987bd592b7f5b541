// Rate-limit behaviour: users who create sessions faster than the
// session-create policy allows (default 30 a minute). Every 429 must carry
// Retry-After and the RateLimit headers, and a client that waits as told
// must then be admitted. 429s are expected here, so they do not count as
// failed requests; anything else unexpected does.
//   k6 run -e SG_SECRET=... loadtest/ratelimit.js
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import * as sg from './lib/sessiongate.js';
import { summaryFor } from './lib/summary.js';

const limited = new Counter('rate_limited');
const admittedAfterWait = new Counter('admitted_after_retry_after');
const unexpected = new Counter('unexpected_status');

export const options = {
  scenarios: {
    bursts: { executor: 'per-vu-iterations', vus: parseInt(__ENV.VUS || '5', 10), iterations: 1, maxDuration: '5m' },
  },
  thresholds: {
    // 429s are expected (not failures); half the requests failing means the
    // target is down: stop.
    http_req_failed: ['rate==0', { threshold: 'rate<0.5', abortOnFail: true, delayAbortEval: '10s' }],
    rate_limited: ['count>0'],
    admitted_after_retry_after: ['count>0'],
    unexpected_status: ['count==0'],
    checks: ['rate==1'],
  },
};

export function setup() {
  return { tokens: sg.mintTokens(parseInt(__ENV.VUS || '5', 10)) };
}

export default function ({ tokens }) {
  const token = sg.tokenFor(tokens);
  const BURST = parseInt(__ENV.BURST || '40', 10);
  let waited = false;
  const ids = [];
  for (let i = 0; i < BURST; i++) {
    const r = sg.createSession(token, 'general', { expected: [201, 429] });
    if (r.status === 201) {
      ids.push(r.json('id'));
      if (waited) {
        admittedAfterWait.add(1);
        break;
      }
    } else if (r.status === 429) {
      limited.add(1);
      check(r, {
        'Retry-After is set': (res) => parseInt(res.headers['Retry-After'], 10) > 0,
        'RateLimit-Policy is set': (res) => (res.headers['Ratelimit-Policy'] || '').length > 0,
        'problem names the policy': (res) =>
          res.json('code') === 'RATE_LIMITED' || res.json('code') === 'MAX_SESSIONS_EXCEEDED',
      });
      // Honour Retry-After, then try once more.
      sleep(sg.retryAfterSeconds(r));
      waited = true;
    } else {
      unexpected.add(1);
    }
  }
  // Past the session cap (default 10, evict_oldest) the earliest were
  // evicted by the later creates: those answer 404.
  for (const id of ids) {
    sg.deleteSession(token, id, [204, 404]);
  }
}

export const handleSummary = summaryFor('ratelimit');
