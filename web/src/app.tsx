/**
 * The dashboard's shell: who is signed in (GET /api/v1/session; the sign-in page when no
 * one is, or when any call answers 401), the nav (Builds, Agents, Dead letters), sign-out,
 * and the routes: `/builds`, `/builds/<id>`, `/agents`, `/dead-letters`.
 */
import { useEffect, useMemo, useState } from 'react';
import { apiPath } from '../../shared/api-paths.js';
import { apiGet, apiSend, onUnauthorized } from './api/client';
import type { SessionViewT } from './api/types';
import { BuildList } from './builds/build-list';
import { BuildPage } from './builds/build-page';
import { prewarmLayout } from './builds/layout-client.js';
import { AgentsPage } from './fleet/agents-page';
import { DeadLettersPage } from './fleet/dead-letters-page';
import { Link, matchRoute, navigate, usePath } from './router';
import { scopeSet } from './scopes';
import { SignIn } from './sign-in';

type SessionState = { kind: 'loading' } | { kind: 'out'; ended: boolean } | { kind: 'in'; session: SessionViewT };

const NAV = [
  { to: '/builds', label: 'Builds' },
  { to: '/agents', label: 'Agents' },
  { to: '/dead-letters', label: 'Dead letters' },
] as const;

export function App() {
  const [state, setState] = useState<SessionState>({ kind: 'loading' });
  const path = usePath();

  useEffect(() => {
    const off = onUnauthorized(() => setState((s) => (s.kind === 'in' ? { kind: 'out', ended: true } : s.kind === 'loading' ? { kind: 'out', ended: false } : s)));
    apiGet<SessionViewT>(apiPath.session()).then(
      (session) => setState({ kind: 'in', session }),
      () => setState({ kind: 'out', ended: false }),
    );
    return off;
  }, []);

  const scopes = useMemo(() => scopeSet(state.kind === 'in' ? state.session.scopes : []), [state]);
  // the DAG layout worker starts while the first page loads its data
  const signedIn = state.kind === 'in';
  useEffect(() => {
    if (signedIn) prewarmLayout();
  }, [signedIn]);

  if (state.kind === 'loading') return <div className="splash">kiln…</div>;
  if (state.kind === 'out') return <SignIn ended={state.ended} onSignedIn={(session) => setState({ kind: 'in', session })} />;

  const signOut = async () => {
    try {
      await apiSend('DELETE', apiPath.session());
    } finally {
      setState({ kind: 'out', ended: false });
    }
  };

  let page;
  let m: Map<string, string> | null;
  if (path === '/' || path === '/builds' || path === '/builds/') page = <BuildList scopes={scopes} />;
  else if ((m = matchRoute('/builds/:id', path))) page = <BuildPage key={m.get('id')} id={m.get('id')!} scopes={scopes} />;
  else if (matchRoute('/agents', path)) page = <AgentsPage scopes={scopes} />;
  else if (matchRoute('/dead-letters', path)) page = <DeadLettersPage scopes={scopes} onNavigate={(to) => navigate(to)} />;
  else
    page = (
      <main className="page" id="main">
        <h1>Not found</h1>
        <p>
          No page at <code>{path}</code>. <Link to="/builds">Builds</Link>
        </p>
      </main>
    );
  const section = path === '/' ? '/builds' : `/${path.split('/')[1] ?? ''}`;
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <a
          className="brand"
          href="/builds"
          onClick={(e) => {
            e.preventDefault();
            navigate('/builds');
          }}
        >
          <span className="brand-mark" aria-hidden="true">
            ◆
          </span>{' '}
          kiln
        </a>
        <nav aria-label="Main">
          {NAV.map((n) => (
            <Link key={n.to} to={n.to} className="nav-link" current={section === n.to}>
              {n.label}
            </Link>
          ))}
        </nav>
        <span className="who" title={`key ${state.session.key_id}`}>
          {state.session.name} <span className="dim">({state.session.scopes.join(', ')})</span>
        </span>
        <button type="button" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      {page}
    </div>
  );
}
