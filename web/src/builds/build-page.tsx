/**
 * A build's page: its header (state, who, times, cancel when the scopes allow) and its DAG
 * with a side pane for the selected node (`?node=<name>` in the URL). The structure is read
 * once (`GET /api/v1/builds/{id}`); states then come from the events stream
 * (`?build=<id>&topics=builds,nodes`), applied at most once per frame; a `reset` refetches.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { apiPath } from '../../../shared/api-paths.js';
import { ApiError, apiGet, apiSend } from '../api/client';
import { useEvents } from '../api/events';
import type { BuildRow, BuildViewT, NodeEventData, NodeStatus, NodeViewT, Scope } from '../api/types';
import { durationOf, formatActor, formatDuration, formatTime, stateLook } from '../format';
import { Link, navigate, useSearch } from '../router';
import { structureHash, type DagStructureNode } from './dag-layout.js';
import { DagView } from './dag-view';
import { NodePane } from './node-pane';

const TERMINAL = new Set(['success', 'failed', 'partial', 'cancelled']);

export function statusOf(n: NodeViewT): NodeStatus {
  return {
    name: n.name,
    state: n.state,
    platform: n.platform,
    agent: n.agent,
    attempt: n.attempts.length,
    started_at: n.started_at,
    finished_at: n.finished_at,
    duration_ms: n.duration_ms,
    cache: n.cache ?? null,
    reused: n.reused_from !== null,
    waiting: n.waiting,
    exit_code: n.exit_code,
    error: n.error,
  };
}

export function BuildPage(props: { id: string; scopes: ReadonlySet<Scope> }) {
  const { id, scopes } = props;
  const [build, setBuild] = useState<BuildViewT | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [statuses, setStatuses] = useState<ReadonlyMap<string, NodeStatus>>(new Map());
  const [confirmCancel, setConfirmCancel] = useState(false);
  const [actionMessage, setActionMessage] = useState<string | null>(null);
  const selected = useSearch().get('node');
  const selectedRef = useRef(selected);
  selectedRef.current = selected;

  const load = useCallback(async () => {
    try {
      const b = await apiGet<BuildViewT>(apiPath.build(id));
      setBuild(b);
      setStatuses(new Map(b.nodes.map((n) => [n.name, statusOf(n)])));
      setError(null);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    }
  }, [id]);
  useEffect(() => {
    setBuild(null);
    void load();
  }, [load]);

  // node events wait for the next frame, so a burst costs one render
  const pending = useRef(new Map<string, NodeStatus>());
  const frame = useRef<number | null>(null);
  const reloadTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const reloadSoon = useCallback(() => {
    if (reloadTimer.current) return;
    reloadTimer.current = setTimeout(() => {
      reloadTimer.current = null;
      void load();
    }, 400);
  }, [load]);
  useEffect(
    () => () => {
      if (frame.current !== null) cancelAnimationFrame(frame.current);
      if (reloadTimer.current) clearTimeout(reloadTimer.current);
    },
    [],
  );
  const onNode = useCallback(
    (d: NodeEventData) => {
      if (d.build !== id) return;
      pending.current.set(d.node.name, d.node);
      // the pane shows attempts and outputs, which only the full view has
      if (d.node.name === selectedRef.current) reloadSoon();
      frame.current ??= requestAnimationFrame(() => {
        frame.current = null;
        const batch = pending.current;
        pending.current = new Map();
        setStatuses((prev) => {
          const next = new Map(prev);
          for (const [k, v] of batch) if (next.has(k)) next.set(k, v);
          return next;
        });
      });
    },
    [id, reloadSoon],
  );
  const onBuild = useCallback(
    (b: BuildRow) => {
      if (b.id !== id) return;
      setBuild((prev) => (prev ? { ...prev, state: b.state, started_at: b.started_at, finished_at: b.finished_at, node_counts: b.node_counts, pinned: b.pinned } : prev));
    },
    [id],
  );
  const stream = useEvents({ topics: ['builds', 'nodes'], build: id }, { onNode, onBuild, onReset: () => void load() });

  // the structure's identity changes only when the structure does (never on a state change)
  const hash = build ? structureHash(build.nodes.map((n) => ({ name: n.name, needs: n.needs, origin: n.origin }))) : '';
  const structure = useMemo<DagStructureNode[]>(() => (build ? build.nodes.map((n) => ({ name: n.name, needs: n.needs, origin: n.origin })) : []), [hash]);

  const select = useCallback((name: string | null) => navigate(name ? `/builds/${encodeURIComponent(id)}?node=${encodeURIComponent(name)}` : `/builds/${encodeURIComponent(id)}`, { replace: true }), [id]);
  const closePane = useCallback(() => select(null), [select]);

  const cancel = async () => {
    setConfirmCancel(false);
    try {
      await apiSend('POST', apiPath.buildCancel(id));
      setActionMessage('cancel requested');
    } catch (e) {
      setActionMessage(e instanceof ApiError ? e.message : String(e));
    }
  };

  if (error && !build) {
    return (
      <main className="page" id="main">
        <h1>Build {id}</h1>
        <p className="error-text" role="alert">
          {error}
        </p>
        <Link to="/builds">← Builds</Link>
      </main>
    );
  }
  if (!build) return <main className="page" id="main">Loading build {id}…</main>;
  const look = stateLook(build.state);
  const node = selected ? build.nodes.find((n) => n.name === selected) : undefined;
  const nodeStatus = node ? statuses.get(node.name) : undefined;
  const counts = Object.entries(build.node_counts).filter(([, n]) => n > 0);
  return (
    <main className="build-page" id="main">
      <header className="build-head">
        <div className="build-title">
          <Link to="/builds" className="dim">
            Builds
          </Link>{' '}
          /{' '}
          <h1>
            {build.name} <span className="dim mono">{build.id}</span>
          </h1>
        </div>
        <div className="build-facts">
          <span className={`badge big ${look.className}`} data-testid="build-state">
            <span aria-hidden="true">{look.icon}</span> {look.label}
          </span>
          <span title="submitted by">by {formatActor(build.submitted_by)}</span>
          <span title="submitted at">submitted {formatTime(build.created_at)}</span>
          <span title="duration">{formatDuration(durationOf(build.started_at, build.finished_at, Date.now()))}</span>
          <span className="dim">{counts.map(([s, n]) => `${n} ${s}`).join(' · ')}</span>
          <span className={`stream stream-${stream}`} title="the events stream">
            {stream === 'live' ? '● live' : stream === 'connecting' ? '○ connecting' : '◌ reconnecting'}
          </span>
          {scopes.has('cancel') && !TERMINAL.has(build.state) ? (
            confirmCancel ? (
              <span>
                <button type="button" className="danger" onClick={() => void cancel()}>
                  Confirm cancel
                </button>{' '}
                <button type="button" onClick={() => setConfirmCancel(false)}>
                  Keep running
                </button>
              </span>
            ) : (
              <button type="button" className="danger" onClick={() => setConfirmCancel(true)} disabled={build.cancel_requested}>
                {build.cancel_requested ? 'Cancelling…' : 'Cancel build'}
              </button>
            )
          ) : null}
          {actionMessage ? <span role="status">{actionMessage}</span> : null}
        </div>
        {build.reason ? <p className="dim">{build.reason}</p> : null}
      </header>
      <div className={`build-body${node ? ' with-pane' : ''}`}>
        <DagView structure={structure} statuses={statuses} selected={selected} onSelect={select} />
        {node && nodeStatus ? <NodePane buildId={id} node={node} status={nodeStatus} scopes={scopes} onClose={closePane} onChanged={() => void load()} /> : null}
      </div>
    </main>
  );
}
