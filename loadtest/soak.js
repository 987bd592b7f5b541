// Soak: sessions churning at a steady rate for a long time (default 30m):
// create, a query, sometimes a switch, and either a delete or abandonment
// (left to expire). Watch resident memory and sessiongate_sessions_active on
// the dashboards while it runs: both should level off after warm-up.
//   k6 run -e SG_SECRET=... -e RATE=100 -e DURATION=30m loadtest/soak.js
import { check } from 'k6';
import * as sg from './lib/sessiongate.js';
import { summaryFor } from './lib/summary.js';

const RATE = parseInt(__ENV.RATE || '50', 10);

export const options = {
  scenarios: {
    churn: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30m',
      preAllocatedVUs: Math.max(10, RATE),
      maxVUs: Math.max(100, RATE * 4),
    },
  },
  thresholds: {
    // Half the requests failing means the target is down: stop the soak.
    http_req_failed: ['rate<0.001', { threshold: 'rate<0.5', abortOnFail: true, delayAbortEval: '10s' }],
    http_req_duration: ['p(99)<250'],
    checks: ['rate>0.999'],
  },
};

export function setup() {
  return { tokens: sg.mintTokens(sg.USERS, 24 * 3600) };
}

export default function ({ tokens }) {
  const token = tokens[Math.floor(Math.random() * tokens.length)];
  const r = sg.createSession(token, 'general');
  if (!check(r, { 'created': (res) => res.status === 201 })) {
    return;
  }
  const id = r.json('id');
  check(sg.query(token, id, 'soak'), { 'answered': (res) => res.status === 200 });
  if (Math.random() < 0.3) {
    check(sg.migrate(token, id, sg.pickToolSet('general')), { 'switched': (res) => res.status === 200 });
  }
  // Most users close their session; some walk away and leave it to expire.
  if (Math.random() < 0.8) {
    check(sg.deleteSession(token, id), { 'closed': (res) => res.status === 204 });
  }
}

export const handleSummary = summaryFor('soak');
