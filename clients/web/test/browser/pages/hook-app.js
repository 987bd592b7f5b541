// The `useSession` hook in a React page, bundled by esbuild for the browser
// tests: controls on `window` change the tool set and unmount the hook.
import { createElement as h, useState } from "react";
import { createRoot } from "react-dom/client";
import { SessionGate } from "../../../dist/index.js";
import { useSession } from "../../../dist/react.js";

function Probe({ client, toolSet }) {
  const { session, status, error } = useSession(client, toolSet);
  window.hookStates.push({ id: session?.id ?? null, toolSet: session?.toolSet ?? null, status, error: error?.message ?? null });
  return h("p", { id: "status" }, `${status} ${session?.toolSet ?? ""}`);
}

function App({ client }) {
  const [toolSet, setToolSet] = useState("general");
  const [mounted, setMounted] = useState(true);
  window.setToolSet = setToolSet;
  window.unmount = () => setMounted(false);
  return mounted ? h(Probe, { client, toolSet }) : h("p", { id: "status" }, "unmounted");
}

window.hookStates = [];
window.startHook = (baseUrl, token) => {
  const client = new SessionGate({ baseUrl, token });
  window.hookClient = client;
  createRoot(document.getElementById("root")).render(h(App, { client }));
};
