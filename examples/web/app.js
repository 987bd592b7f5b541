// The example page's logic: the built client, imported as a plain ES module.
import { SessionGate, SessionGateError } from "../../clients/web/dist/index.js";

const $ = (id) => document.getElementById(id);
let gate = null;
let session = null;

function show(e) {
  if (!e) return void ($("error").textContent = "");
  const lines = e instanceof SessionGateError
    ? [`${e.status} ${e.code}: ${e.detail}`, `request_id: ${e.requestId ?? "–"}`, `trace_id: ${e.traceId ?? "–"}`]
    : [String(e)];
  if (e instanceof SessionGateError && e.retryAfter !== undefined) lines.push(`retry after: ${e.retryAfter} s`);
  if (e?.problem?.suggestion) lines.push(`suggestion: ${e.problem.suggestion}`);
  $("error").textContent = lines.join("\n");
}

function render() {
  const open = session !== null && !session.closed;
  $("session").textContent = open ? session.id : "none";
  $("toolset").textContent = open ? session.toolSet : "–";
  $("expires").textContent = open
    ? `${session.expiresAt.toLocaleTimeString()} (in ${Math.max(0, Math.round((session.expiresAt - Date.now()) / 1000))} s)`
    : "–";
  $("ratelimit").textContent = gate?.rateLimit?.limit ?? "–";
  $("policy").textContent = gate?.rateLimit?.policy ?? "–";
  $("open").disabled = !gate || open;
  for (const id of ["switch", "close", "query"]) $(id).disabled = !open;
}

/** Runs `action`, showing its error (with request and trace ids) or clearing the last one. */
async function run(action) {
  try {
    await action();
    show(null);
  } catch (e) {
    show(e);
  }
  render();
}

$("signin").onclick = () =>
  run(async () => {
    gate = new SessionGate({ baseUrl: $("base").value.trim(), token: () => $("token").value.trim() });
    const sets = await gate.toolSets();
    $("toolsets").replaceChildren(...sets.map((t) => new Option(`${t.name}: ${t.description}`, t.name)));
    $("toolsets").disabled = false;
  });
$("open").onclick = () => run(async () => (session = await gate.open($("toolsets").value)));
$("switch").onclick = () => run(() => session.switchTo($("toolsets").value));
$("query").onclick = () =>
  run(async () => {
    const answer = await session.query($("input").value);
    $("output").textContent = `turn ${answer.turn} (${answer.tool_set}, ${answer.duration_ms} ms): ${answer.output}`;
  });
$("close").onclick = () => run(() => session.close());

// The expiry moves with every heartbeat the client sends on its own.
setInterval(render, 1000);
render();
