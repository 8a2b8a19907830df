/**
 * The side pane of a selected node: its state and details, attempts, the build's error
 * report for it, provenance, outputs (download links), pushed images with digests, a retry
 * button for a failed node (scope cancel), and its log (`<LogPane>`). Escape closes it.
 */
import { useEffect, useRef, useState } from 'react';
import { apiPath } from '../../../shared/api-paths.js';
import { ApiError, apiGet, apiSend } from '../api/client';
import type { AttemptViewT, NodeStatus, NodeViewT, Scope } from '../api/types';
import { durationOf, formatDuration, formatTime, stateLook } from '../format';
import { LogPane } from '../logs/log-pane';

/** What the error report says about one node (shared/api-fleet.ts ErrorReportNode, the fields shown). */
interface ErrorReportNode {
  node: string;
  attempt: number | null;
  agent: string | null;
  exit_code: number | null;
  failed_step: string | null;
  error: string | null;
  infra: boolean;
  log_tail: string[];
}

const casLink = (digest: string) => apiPath.casBlob(digest);
const short = (digest: string) => (digest.length > 23 ? `${digest.slice(0, 19)}…${digest.slice(-4)}` : digest);

export function NodePane(props: { buildId: string; node: NodeViewT; status: NodeStatus; scopes: ReadonlySet<Scope>; onClose: () => void; onChanged: () => void }) {
  const { buildId, node, status, scopes, onClose, onChanged } = props;
  const heading = useRef<HTMLHeadingElement>(null);
  const [report, setReport] = useState<ErrorReportNode | null>(null);
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const look = stateLook(status.state);

  useEffect(() => heading.current?.focus(), [node.name]);
  useEffect(() => {
    const onKey = (e: globalThis.KeyboardEvent) => {
      if (e.key === 'Escape') onClose();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [onClose]);

  useEffect(() => {
    setReport(null);
    if (status.state !== 'failed') return;
    const ac = new AbortController();
    apiGet<{ failures: ErrorReportNode[] }>(apiPath.buildError(buildId), ac.signal).then(
      (r) => setReport(r.failures.find((f) => f.node === node.name) ?? null),
      () => setReport(null),
    );
    return () => ac.abort();
  }, [buildId, node.name, status.state]);

  const retry = async () => {
    setBusy(true);
    setMessage(null);
    try {
      await apiSend('POST', apiPath.nodeRetry(buildId, node.name));
      setMessage('retry requested');
      onChanged();
    } catch (e) {
      setMessage(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const attempts: AttemptViewT[] = [...node.attempts].reverse();
  const outputs = node.outputs.filter((o) => o.digest !== null);
  return (
    <aside className="pane" aria-label={`node ${node.name}`}>
      <header className="pane-head">
        <h2 ref={heading} tabIndex={-1}>
          <span className={`badge ${look.className}`}>
            <span aria-hidden="true">{look.icon}</span> {look.label}
          </span>{' '}
          {node.name}
        </h2>
        <button type="button" className="icon-button" onClick={onClose} aria-label="Close the node pane (Escape)" title="Close (Escape)">
          ✕
        </button>
      </header>
      <dl className="facts">
        <dt>platform</dt>
        <dd>{status.platform}</dd>
        <dt>agent</dt>
        <dd>{status.agent ?? '–'}</dd>
        <dt>attempts</dt>
        <dd>{status.attempt}</dd>
        <dt>duration</dt>
        <dd>{formatDuration(status.duration_ms ?? durationOf(status.started_at, status.finished_at, Date.now()))}</dd>
        <dt>cache</dt>
        <dd>{status.cache ? `${status.cache.hit} hit, ${status.cache.miss} miss (push: ${status.cache.push})` : '–'}</dd>
        {status.reused && node.reused_from ? (
          <>
            <dt>reused</dt>
            <dd>
              from <a href={`/builds/${encodeURIComponent(node.reused_from.build_id)}`}>{node.reused_from.build_id}</a> / {node.reused_from.node}
            </dd>
          </>
        ) : null}
        {status.waiting ? (
          <>
            <dt>waiting</dt>
            <dd>{status.waiting}</dd>
          </>
        ) : null}
        {status.error ? (
          <>
            <dt>error</dt>
            <dd className="error-text">
              {status.error}
              {status.exit_code !== null ? ` (exit ${status.exit_code})` : ''}
            </dd>
          </>
        ) : null}
        {node.provenance ? (
          <>
            <dt>provenance</dt>
            <dd>
              <a href={casLink(node.provenance)} target="_blank" rel="noreferrer">
                {short(node.provenance)}
              </a>
            </dd>
          </>
        ) : null}
      </dl>
      {status.state === 'failed' && scopes.has('cancel') ? (
        <p>
          <button type="button" onClick={() => void retry()} disabled={busy}>
            ↻ Retry {node.name}
          </button>{' '}
          {message ? <span role="status">{message}</span> : null}
        </p>
      ) : null}
      {report ? (
        <section>
          <h3>Error report</h3>
          <p>
            {report.failed_step ? (
              <>
                failed step <code>{report.failed_step}</code>;{' '}
              </>
            ) : null}
            {report.infra ? 'an infrastructure failure; ' : ''}
            attempt {report.attempt ?? '–'} on {report.agent ?? '–'}
          </p>
          {report.log_tail.length > 0 ? <pre className="log-tail">{report.log_tail.slice(-40).join('\n')}</pre> : null}
        </section>
      ) : null}
      {outputs.length > 0 ? (
        <section>
          <h3>Outputs</h3>
          <ul className="plain">
            {outputs.map((o) => (
              <li key={o.name}>
                <a href={casLink(o.digest!)} download={o.name}>
                  ⤓ {o.name}
                </a>{' '}
                <span className="dim">
                  {o.size !== null ? `${o.size} bytes, ` : ''}
                  {short(o.digest!)}
                </span>
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      {node.images.length > 0 ? (
        <section>
          <h3>Images</h3>
          <ul className="plain">
            {node.images.map((im) => (
              <li key={im.ref + im.digest}>
                <code>{im.ref}</code>
                <br />
                <code className="dim" title={im.digest}>
                  {im.digest}
                </code>{' '}
                <span className="dim">{im.platform}</span>
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      <section>
        <h3>Attempts</h3>
        {attempts.length === 0 ? (
          <p className="dim">none yet</p>
        ) : (
          <table className="table compact">
            <thead>
              <tr>
                <th>#</th>
                <th>state</th>
                <th>agent</th>
                <th>started</th>
                <th>took</th>
                <th>exit / why</th>
              </tr>
            </thead>
            <tbody>
              {attempts.map((a) => {
                const al = stateLook(a.state);
                return (
                  <tr key={a.id}>
                    <td>{a.number}</td>
                    <td>
                      <span className={`badge ${al.className}`}>
                        <span aria-hidden="true">{al.icon}</span> {al.label}
                      </span>
                    </td>
                    <td>{a.agent}</td>
                    <td>{formatTime(a.started_at)}</td>
                    <td>{formatDuration(durationOf(a.started_at, a.finished_at, Date.now()))}</td>
                    <td>{a.exit_code !== null ? `exit ${a.exit_code}` : (a.reason ?? a.error ?? '')}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </section>
      <section className="pane-log">
        <h3>Log</h3>
        <LogPane buildId={buildId} node={node.name} scopes={scopes} attempt={status.attempt} />
      </section>
    </aside>
  );
}
