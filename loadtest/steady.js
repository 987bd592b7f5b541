// Steady load: a constant arrival rate of authenticated reads of a session
// (the route the benchmarks measure), independent of how fast answers come,
// so latency is measured honestly (no coordinated omission).
//   k6 run -e SG_SECRET=... -e RATE=500 -e DURATION=2m loadtest/steady.js
import { check } from 'k6';
import * as sg from './lib/sessiongate.js';
import { summaryFor } from './lib/summary.js';

const RATE = parseInt(__ENV.RATE || '200', 10);

export const options = {
  scenarios: {
    reads: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '1m',
      preAllocatedVUs: Math.max(10, Math.ceil(RATE / 20)),
      maxVUs: Math.max(50, RATE),
    },
  },
  thresholds: {
    // Half the requests failing means the target is down: stop, don't keep
    // measuring errors.
    http_req_failed: ['rate<0.001', { threshold: 'rate<0.5', abortOnFail: true, delayAbortEval: '10s' }],
    'http_req_duration{name:GET /v1/sessions/{id}}': ['p(95)<20', 'p(99)<50'],
    dropped_iterations: ['count<10'],
  },
};

export function setup() {
  // One session per user; the default policy (600/min per user) allows
  // RATE/USERS reads a second per user, so spread RATE over enough users.
  const tokens = sg.mintTokens(Math.min(sg.USERS, 200));
  const sessions = tokens.map((token) => {
    const r = sg.createSession(token, 'general');
    if (r.status !== 201) {
      throw new Error(`setup: create answered ${r.status}: ${r.body}`);
    }
    return { token, id: r.json('id') };
  });
  return { sessions };
}

export default function ({ sessions }) {
  const s = sessions[Math.floor(Math.random() * sessions.length)];
  check(sg.getSession(s.token, s.id), { 'read 200': (r) => r.status === 200 });
}

export function teardown({ sessions }) {
  for (const s of sessions) {
    sg.deleteSession(s.token, s.id);
  }
}

export const handleSummary = summaryFor('steady');
