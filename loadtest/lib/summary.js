// handleSummary for every script: the end-of-test text on stdout, and the
// full summary as JSON in loadtest/results/<name>.json (k6 writes the file
// relative to where it runs; the directory must exist: `mkdir -p loadtest/results`).
//
// The text is rendered here, with no remote import, so every script runs
// without internet: each threshold with ✓ or ✗, the checks, and every
// metric's figures (trends: avg, min, med, max, p(90), p(95), p(99); rates;
// counters; gauges), submetrics under their metric.

const GREEN = '\u001b[32m';
const RED = '\u001b[31m';
const DIM = '\u001b[2m';
const RESET = '\u001b[0m';

function paint(text, color, colors) {
  return colors ? `${color}${text}${RESET}` : text;
}

function duration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) {
    return '-';
  }
  if (ms < 1) {
    return `${(ms * 1000).toFixed(2)}µs`;
  }
  if (ms < 1000) {
    return `${ms.toFixed(2)}ms`;
  }
  return `${(ms / 1000).toFixed(2)}s`;
}

function number(n) {
  if (n === undefined || n === null || Number.isNaN(n)) {
    return '-';
  }
  return Number.isInteger(n) ? String(n) : n.toFixed(4).replace(/0+$/, '').replace(/\.$/, '');
}

function figures(metric) {
  const v = metric.values || {};
  const isTime = metric.contains === 'time';
  const show = isTime ? duration : number;
  switch (metric.type) {
    case 'trend':
      return ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)']
        .filter((k) => k in v)
        .map((k) => `${k}=${show(v[k])}`)
        .join(' ');
    case 'rate':
      return `${(100 * (v.rate || 0)).toFixed(2)}% (${v.passes || 0} of ${(v.passes || 0) + (v.fails || 0)})`;
    case 'counter':
      return `${number(v.count)} (${number(v.rate)}/s)`;
    case 'gauge':
      return `${number(v.value)} (min=${number(v.min)} max=${number(v.max)})`;
    default:
      return JSON.stringify(v);
  }
}

function checksOf(group, out) {
  for (const c of group.checks || []) {
    out.push(c);
  }
  for (const g of group.groups || []) {
    checksOf(g, out);
  }
  return out;
}

/** The end-of-test summary as text (what jslib's textSummary prints, in short). */
export function textSummary(data, { indent = '  ', enableColors = false } = {}) {
  const lines = [];
  const metrics = data.metrics || {};
  const names = Object.keys(metrics).sort();

  const thresholds = [];
  for (const name of names) {
    for (const [expr, t] of Object.entries(metrics[name].thresholds || {})) {
      thresholds.push({ name, expr, ok: t.ok });
    }
  }
  const failed = thresholds.filter((t) => !t.ok).length;
  lines.push(`${indent}THRESHOLDS (${thresholds.length - failed} passed, ${failed} failed)`);
  for (const t of thresholds) {
    const mark = t.ok ? paint('✓', GREEN, enableColors) : paint('✗', RED, enableColors);
    lines.push(`${indent}${indent}${mark} ${t.name}: ${t.expr}  ${paint(figures(metrics[t.name]), DIM, enableColors)}`);
  }

  const checks = checksOf(data.root_group || {}, []);
  if (checks.length > 0) {
    lines.push('');
    lines.push(`${indent}CHECKS`);
    for (const c of checks) {
      const ok = c.fails === 0;
      const mark = ok ? paint('✓', GREEN, enableColors) : paint('✗', RED, enableColors);
      lines.push(`${indent}${indent}${mark} ${c.name} (${c.passes} passed, ${c.fails} failed)`);
    }
  }

  lines.push('');
  lines.push(`${indent}METRICS`);
  const width = Math.min(70, Math.max(...names.map((n) => n.length + 2), 0));
  for (const name of names) {
    const sub = name.includes('{');
    const label = sub ? `${indent}${name}` : name;
    lines.push(`${indent}${indent}${label.padEnd(width)} ${figures(metrics[name])}`);
  }

  const state = data.state || {};
  if (state.testRunDurationMs !== undefined) {
    lines.push('');
    lines.push(`${indent}ran ${duration(state.testRunDurationMs)}`);
  }
  lines.push(
    failed === 0
      ? `${indent}${paint('every threshold passed', GREEN, enableColors)}`
      : `${indent}${paint(`${failed} threshold(s) failed`, RED, enableColors)}`,
  );
  return `\n${lines.join('\n')}\n\n`;
}

export function summaryFor(name) {
  return function handleSummary(data) {
    const dir = __ENV.RESULTS_DIR || 'loadtest/results';
    return {
      stdout: textSummary(data, { indent: '  ', enableColors: !__ENV.NO_COLOR }),
      [`${dir}/${name}.json`]: JSON.stringify(data, null, 2),
    };
  };
}
