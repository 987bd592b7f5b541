// The frontend journey under many virtual users: open a session and read it
// back, ask a few questions, switch tool set in place, keep it alive, close
// it; with think time between steps, as people do.
//   k6 run -e SG_SECRET=... -e VUS=200 loadtest/journey.js
import { check, group, sleep } from 'k6';
import * as sg from './lib/sessiongate.js';
import { summaryFor } from './lib/summary.js';

const VUS = parseInt(__ENV.VUS || '100', 10);
const THINK = parseFloat(__ENV.THINK || '0.5');

export const options = {
  scenarios: {
    journey: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: __ENV.RAMP || '30s', target: VUS },
        { duration: __ENV.HOLD || '2m', target: VUS },
        { duration: __ENV.RAMP_DOWN || '15s', target: 0 },
      ],
      gracefulRampDown: '10s',
    },
  },
  thresholds: {
    // Half the requests failing means the target is down: stop.
    http_req_failed: ['rate<0.01', { threshold: 'rate<0.5', abortOnFail: true, delayAbortEval: '10s' }],
    checks: ['rate>0.99'],
    'http_req_duration{name:POST /v1/sessions}': ['p(95)<100'],
    'http_req_duration{name:GET /v1/sessions/{id}}': ['p(95)<50'],
    'http_req_duration{name:POST /v1/sessions/{id}/queries}': ['p(95)<500'],
    'http_req_duration{name:PATCH /v1/sessions/{id}}': ['p(95)<100'],
    'http_req_duration{name:POST /v1/sessions/{id}/heartbeat}': ['p(95)<50'],
    'http_req_duration{name:DELETE /v1/sessions/{id}}': ['p(95)<50'],
  },
};

export function setup() {
  return { tokens: sg.mintTokens(Math.max(VUS, 1)) };
}

export default function ({ tokens }) {
  const token = sg.tokenFor(tokens);
  let id;
  group('open', () => {
    const r = sg.createSession(token, 'general', { expected: [201, 429] });
    if (r.status === 429) {
      // A session-create policy or the cap: wait as told, then try later.
      sleep(sg.retryAfterSeconds(r));
      return;
    }
    check(r, { 'session created': (res) => res.status === 201 });
    id = r.json('id');
    check(sg.getSession(token, id), { 'session read back': (res) => res.status === 200 && res.json('id') === id });
  });
  if (!id) {
    // Not created (nor refused with a Retry-After): think before the next
    // try rather than spin on a failing target.
    sleep(THINK);
    return;
  }
  sleep(THINK);
  group('converse', () => {
    for (let turn = 1; turn <= 3; turn++) {
      const r = sg.query(token, id, `question ${turn}`);
      check(r, { 'query answered': (res) => res.status === 200 && res.json('turn') === turn });
      sleep(THINK);
    }
  });
  group('switch tool set', () => {
    const to = sg.pickToolSet('general');
    check(sg.migrate(token, id, to), { 'switched in place': (r) => r.status === 200 && r.json('id') === id });
  });
  sleep(THINK);
  group('keep alive', () => {
    check(sg.heartbeat(token, id), { 'heartbeat ok': (r) => r.status === 200 });
  });
  group('close', () => {
    check(sg.deleteSession(token, id), { 'closed': (r) => r.status === 204 });
  });
  sleep(THINK);
}

export const handleSummary = summaryFor('journey');
