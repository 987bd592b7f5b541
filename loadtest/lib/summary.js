// handleSummary for every script: the end-of-test text on stdout, and the
// full summary as JSON in loadtest/results/<name>.json (k6 writes the file
// relative to where it runs; the directory must exist: `mkdir -p loadtest/results`).
import { textSummary } from 'https://jslib.k6.io/k6-summary/0.1.0/index.js';

export function summaryFor(name) {
  return function handleSummary(data) {
    const dir = __ENV.RESULTS_DIR || 'loadtest/results';
    return {
      stdout: textSummary(data, { indent: '  ', enableColors: true }),
      [`${dir}/${name}.json`]: JSON.stringify(data, null, 2),
    };
  };
}
