// `useSession`: one agent session for the life of a component. Opens on
// mount, switches by PATCH when `toolSet` changes (never delete + create:
// the old hook's lost deletes are what filled users' session caps), closes
// on unmount. React is a peer dependency of this entry point only.

import { useCallback, useEffect, useRef, useState } from "react";
import type { QueryResult, Session, SessionGate, SessionGateError } from "./index.js";

export type SessionStatus = "opening" | "open" | "switching" | "closed" | "error";

export interface UseSession {
  session: Session | null;
  status: SessionStatus;
  error: SessionGateError | Error | null;
  /** Runs a query through the open session. */
  query: (input: string) => Promise<QueryResult>;
}

export function useSession(client: SessionGate, toolSet: string): UseSession {
  const [session, setSession] = useState<Session | null>(null);
  const [status, setStatus] = useState<SessionStatus>("opening");
  const [error, setError] = useState<SessionGateError | Error | null>(null);
  // The tool set the component wants now; switches converge on it, so a
  // burst of prop changes costs at most one PATCH in flight at a time.
  const wanted = useRef(toolSet);
  wanted.current = toolSet;
  const current = useRef<{ session: Session | null; mounted: boolean; converging: boolean }>({
    session: null,
    mounted: false,
    converging: false,
  });

  const converge = useCallback(async () => {
    const c = current.current;
    if (c.converging) return;
    c.converging = true;
    try {
      while (c.mounted && c.session && !c.session.closed && c.session.toolSet !== wanted.current) {
        setStatus("switching");
        await c.session.switchTo(wanted.current);
      }
      if (c.mounted && c.session && !c.session.closed) {
        setStatus("open");
        setError(null);
      }
    } catch (e) {
      if (c.mounted) {
        setError(e as Error);
        setStatus("error");
      }
    } finally {
      c.converging = false;
    }
  }, []);

  useEffect(() => {
    const c = current.current;
    c.mounted = true;
    c.session = null;
    setStatus("opening");
    setError(null);
    let opened: Session | null = null;
    let unmounted = false;
    client.open(wanted.current).then(
      (s) => {
        opened = s;
        if (unmounted) {
          void s.close().catch(() => undefined);
          return;
        }
        c.session = s;
        setSession(s);
        void converge();
      },
      (e: unknown) => {
        if (unmounted) return;
        setError(e as Error);
        setStatus("error");
      },
    );
    return () => {
      unmounted = true;
      c.mounted = false;
      c.session = null;
      if (opened) void opened.close().catch(() => undefined);
    };
  }, [client, converge]);

  useEffect(() => {
    void converge();
  }, [toolSet, converge]);

  const query = useCallback(async (input: string) => {
    const s = current.current.session;
    if (!s || s.closed) throw new Error("useSession: no open session yet");
    return s.query(input);
  }, []);

  return { session, status: session?.closed ? "closed" : status, error, query };
}
