/**
 * PLACEHOLDER until the merge: the logview helper's web/src/fleet/agents-page.tsx replaces
 * this file (the integrator keeps theirs). Same props; lists the agents by name and state.
 */
import { useEffect, useState } from 'react';
import { apiPath } from '../../../shared/api-paths.js';
import { apiGet } from '../api/client';
import type { AgentViewT, Scope } from '../api/types';

export function AgentsPage(_props: { scopes: ReadonlySet<Scope> }) {
  const [agents, setAgents] = useState<AgentViewT[] | null>(null);
  useEffect(() => {
    const ac = new AbortController();
    apiGet<{ items: AgentViewT[] }>(apiPath.agents(), ac.signal).then((p) => setAgents(p.items), () => setAgents([]));
    return () => ac.abort();
  }, []);
  return (
    <main className="page">
      <h1>Agents</h1>
      {agents === null ? <p>Loading…</p> : <ul>{agents.map((a) => <li key={a.name}>{a.name}: {a.state}</li>)}</ul>}
    </main>
  );
}
