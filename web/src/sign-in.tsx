/**
 * The sign-in page: paste an API key once; the coordinator answers with an HttpOnly session
 * cookie (POST /api/v1/session). The key goes only in that request's body, never in a URL,
 * and is dropped from the page's state right after.
 */
import { useState, type FormEvent } from 'react';
import { apiPath } from '../../shared/api-paths.js';
import { ApiError, apiSend } from './api/client';
import type { SessionViewT } from './api/types';

export function SignIn(props: { onSignedIn: (s: SessionViewT) => void; ended?: boolean }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const k = key.trim();
    if (k === '') {
      setError('paste an API key (kiln_key_…) or the API token');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const s = await apiSend<SessionViewT>('POST', apiPath.session(), { key: k });
      setKey('');
      props.onSignedIn(s);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="sign-in" id="main">
      <form onSubmit={(e) => void submit(e)} aria-labelledby="sign-in-title">
        <h1 id="sign-in-title">
          <span className="brand-mark" aria-hidden="true">
            ◆
          </span>{' '}
          kiln
        </h1>
        {props.ended ? <p className="dim">The session ended (signed out, expired, or its key was revoked).</p> : null}
        <label htmlFor="key">API key</label>
        <input id="key" name="key" type="password" autoComplete="off" spellCheck={false} maxLength={1024} value={key} onChange={(e) => setKey(e.target.value)} placeholder="kiln_key_…" autoFocus />
        <p className="dim small">Create one with <code>kiln keys create --scope read</code>. The key is sent once; the browser keeps only a session cookie.</p>
        {error ? (
          <p className="error-text" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
