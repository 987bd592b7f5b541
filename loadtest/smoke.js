// Smoke: one user walks every route once. Run it before anything heavier.
//   k6 run -e SG_SECRET=... loadtest/smoke.js
import { check, sleep } from 'k6';
import * as sg from './lib/sessiongate.js';
import { summaryFor } from './lib/summary.js';

export const options = {
  vus: 1,
  iterations: 3,
  thresholds: {
    http_req_failed: ['rate==0'],
    // The target is down: stop at once.
    'http_req_failed{name:GET /healthz}': [{ threshold: 'rate==0', abortOnFail: true }],
    checks: ['rate==1'],
    http_req_duration: ['p(95)<200'],
  },
};

export function setup() {
  return { token: sg.mintToken('smoke-user'), admin: sg.mintToken('smoke-admin', ['admin']) };
}

export default function ({ token, admin }) {
  check(sg.api('GET', '/healthz'), { 'healthz 200': (r) => r.status === 200 });
  check(sg.api('GET', '/readyz'), { 'readyz 200': (r) => r.status === 200 });
  check(sg.listToolSets(token), { 'tool sets listed': (r) => r.json('tool_sets').length > 0 });

  const created = sg.createSession(token, 'general');
  check(created, {
    'created 201': (r) => r.status === 201,
    'has an id': (r) => typeof r.json('id') === 'string',
    'location header': (r) => (r.headers.Location || '').startsWith('/v1/sessions/'),
  });
  const id = created.json('id');
  check(sg.getSession(token, id), { 'read back': (r) => r.json('id') === id });
  check(sg.listSessions(token), { 'listed': (r) => r.json('sessions').some((s) => s.id === id) });
  check(sg.query(token, id, 'hello'), { 'query answered': (r) => r.status === 200 && r.json('turn') >= 1 });
  check(sg.migrate(token, id, 'coding'), { 'migrated': (r) => r.json('tool_set') === 'coding' });
  check(sg.heartbeat(token, id), { 'heartbeat 200': (r) => r.status === 200 });
  check(sg.api('GET', '/v1/admin/sessions?user={user}', { token: admin, params: { user: 'smoke-user' } }), {
    'admin sees it': (r) => r.status === 200,
  });
  check(sg.deleteSession(token, id), { 'deleted 204': (r) => r.status === 204 });
  check(sg.api('GET', '/v1/sessions/{id}', { token, params: { id }, expected: [404] }), {
    'gone after delete': (r) => r.status === 404,
  });
  check(sg.api('GET', '/v1/sessions', { expected: [401] }), { 'no token, 401': (r) => r.status === 401 });
  check(sg.api('GET', '/metrics'), { 'metrics exposed': (r) => r.body.includes('sessiongate_sessions_created_total') });
  sleep(0.5);
}

export const handleSummary = summaryFor('smoke');
