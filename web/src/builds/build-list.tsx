/**
 * The builds list: newest first, live (`build` events add and update rows, at most one
 * render per frame), filtered by state and name (`?state=&name=` in the URL, sent to the
 * coordinator and applied to live rows too), counts by state, duration, who submitted.
 * Pages of 100 with "Load more"; at most MAX_ROWS rows are kept.
 */
import { memo, useCallback, useEffect, useRef, useState, type ChangeEvent } from 'react';
import { apiPath, withQuery } from '../../../shared/api-paths.js';
import { BUILD_STATES, type BuildState } from '../../../shared/states.js';
import { ApiError, apiGet } from '../api/client';
import { useEvents } from '../api/events';
import type { BuildPageT, BuildRow, Scope } from '../api/types';
import { useNow } from '../use-now';
import { durationOf, formatActor, formatDuration, formatTime, stateLook } from '../format';
import { Link, navigate, useSearch } from '../router';

const PAGE = 100;
const MAX_ROWS = 1000;
const TERMINAL = new Set<string>(['success', 'failed', 'partial', 'cancelled']);

function matches(b: BuildRow, state: string, name: string): boolean {
  return (state === '' || b.state === state) && (name === '' || b.name.toLowerCase().includes(name.toLowerCase()));
}

const Row = memo(function Row({ b, now }: { b: BuildRow; now: number }) {
  const look = stateLook(b.state);
  const nodes = Object.entries(b.node_counts).filter(([, n]) => n > 0);
  const duration = b.duration_ms ?? durationOf(b.started_at, b.finished_at, now);
  return (
    <tr data-build={b.id}>
      <td>
        <span className={`badge ${look.className}`}>
          <span aria-hidden="true">{look.icon}</span> {look.label}
        </span>
      </td>
      <td>
        <Link to={`/builds/${encodeURIComponent(b.id)}`}>{b.name}</Link>
        <div className="dim mono small">{b.id}</div>
      </td>
      <td>{formatActor(b.submitted_by)}</td>
      <td>{formatTime(b.created_at)}</td>
      <td className="num">{formatDuration(duration)}</td>
      <td className="small">{nodes.map(([s, n]) => `${n} ${s}`).join(' · ')}</td>
    </tr>
  );
});

/** The rows after a batch of `build` events: changed rows in place (or gone when they stop matching), new ones on top. */
export function applyLive(prev: readonly BuildRow[], batch: ReadonlyMap<string, BuildRow>, state: string, name: string): BuildRow[] {
  const byId = new Map(prev.map((r, i) => [r.id, i]));
  const next: (BuildRow | null)[] = [...prev];
  const fresh: BuildRow[] = [];
  for (const b of batch.values()) {
    const i = byId.get(b.id);
    const keep = matches(b, state, name);
    if (i !== undefined) next[i] = keep ? b : null;
    else if (keep) fresh.push(b);
  }
  fresh.sort((a, z) => (a.id < z.id ? 1 : -1));
  return [...fresh, ...next.filter((r): r is BuildRow => r !== null)].slice(0, MAX_ROWS);
}

export function BuildList(_props: { scopes: ReadonlySet<Scope> }) {
  const search = useSearch();
  const stateParam = search.get('state') ?? '';
  const state = (BUILD_STATES as readonly string[]).includes(stateParam) ? (stateParam as BuildState) : '';
  const name = (search.get('name') ?? '').slice(0, 200);
  const [nameInput, setNameInput] = useState(name);
  const [rows, setRows] = useState<BuildRow[] | null>(null);
  const [serverCounts, setServerCounts] = useState<BuildPageT['counts'] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const now = useNow(1000);

  const setFilter = useCallback((next: { state?: string; name?: string }) => {
    const q = withQuery('/builds', { state: (next.state ?? state) || undefined, name: (next.name ?? name) || undefined });
    navigate(q, { replace: true });
  }, [state, name]);

  // the name filter follows typing after a pause
  useEffect(() => {
    if (nameInput === name) return;
    const t = setTimeout(() => setFilter({ name: nameInput }), 250);
    return () => clearTimeout(t);
  }, [nameInput, name, setFilter]);

  const load = useCallback(
    async (after: string | null, signal?: AbortSignal) => {
      try {
        const page = await apiGet<BuildPageT>(withQuery(apiPath.builds(), { limit: PAGE, cursor: after ?? undefined, state: state || undefined, name: name || undefined }), signal);
        const items = page.items.filter((b) => matches(b, state, name));
        setRows((prev) => (after && prev ? [...prev, ...items.filter((b) => !prev.some((p) => p.id === b.id))].slice(0, MAX_ROWS) : items));
        setCursor(page.next_cursor);
        setServerCounts(page.counts ?? null);
        setError(null);
      } catch (e) {
        if (signal?.aborted) return;
        setError(e instanceof ApiError ? e.message : String(e));
      }
    },
    [state, name],
  );
  useEffect(() => {
    const ac = new AbortController();
    setRows(null);
    void load(null, ac.signal);
    return () => ac.abort();
  }, [load]);

  // live rows: a burst of events costs one render
  const pending = useRef(new Map<string, BuildRow>());
  const frame = useRef<number | null>(null);
  const filter = useRef({ state, name });
  filter.current = { state, name };
  const serverCountsRef = useRef(serverCounts);
  serverCountsRef.current = serverCounts;
  const countsTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(
    () => () => {
      if (frame.current !== null) cancelAnimationFrame(frame.current);
      if (countsTimer.current) clearTimeout(countsTimer.current);
    },
    [],
  );
  const onBuild = useCallback((b: BuildRow) => {
    pending.current.set(b.id, b);
    frame.current ??= requestAnimationFrame(() => {
      frame.current = null;
      const batch = pending.current;
      pending.current = new Map();
      const { state: st, name: nm } = filter.current;
      setRows((prev) => (prev ? applyLive(prev, batch, st, nm) : prev));
      // the coordinator's counts: asked again at most every 2 s while builds change
      if (serverCountsRef.current && !countsTimer.current) {
        countsTimer.current = setTimeout(() => {
          countsTimer.current = null;
          apiGet<BuildPageT>(withQuery(apiPath.builds(), { limit: 1, name: filter.current.name || undefined })).then(
            (p) => setServerCounts(p.counts ?? null),
            () => undefined,
          );
        }, 2000);
      }
    });
  }, []);
  const stream = useEvents({ topics: ['builds'] }, { onBuild, onReset: () => void load(null) });

  const counts = new Map<string, number>();
  if (serverCounts) for (const [k, v] of Object.entries(serverCounts)) counts.set(k, v ?? 0);
  else for (const r of rows ?? []) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
  const total = [...counts.values()].reduce((a, b) => a + b, 0);

  return (
    <main className="page" id="main">
      <div className="list-head">
        <h1>Builds</h1>
        <span className={`stream stream-${stream}`} title="the events stream">
          {stream === 'live' ? '● live' : stream === 'connecting' ? '○ connecting' : '◌ reconnecting'}
        </span>
      </div>
      <div className="filters" role="group" aria-label="Filter builds">
        <button type="button" className={state === '' ? 'chip on' : 'chip'} aria-pressed={state === ''} onClick={() => setFilter({ state: '' })}>
          all <span className="count">{total}</span>
        </button>
        {BUILD_STATES.map((s) => {
          const look = stateLook(s);
          return (
            <button key={s} type="button" className={`chip ${look.className}${state === s ? ' on' : ''}`} aria-pressed={state === s} onClick={() => setFilter({ state: state === s ? '' : s })}>
              <span aria-hidden="true">{look.icon}</span> {s} <span className="count">{counts.get(s) ?? 0}</span>
            </button>
          );
        })}
        <label className="name-filter">
          <span className="visually-hidden">Filter by name</span>
          <input type="search" placeholder="name contains…" value={nameInput} maxLength={200} onChange={(e: ChangeEvent<HTMLInputElement>) => setNameInput(e.target.value)} />
        </label>
      </div>
      {!serverCounts && rows ? <p className="dim small">counts are of the builds loaded below</p> : null}
      {error ? (
        <p className="error-text" role="alert">
          {error}
        </p>
      ) : null}
      {rows === null ? (
        <p>Loading…</p>
      ) : rows.length === 0 ? (
        <p className="dim">No builds{state || name ? ' match the filter' : ' yet: submit one with kiln submit'}.</p>
      ) : (
        <table className="table builds">
          <thead>
            <tr>
              <th>state</th>
              <th>name</th>
              <th>submitted by</th>
              <th>submitted</th>
              <th className="num">duration</th>
              <th>nodes</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((b) => (
              <Row key={b.id} b={b} now={TERMINAL.has(b.state) ? 0 : now} />
            ))}
          </tbody>
        </table>
      )}
      {cursor && rows && rows.length < MAX_ROWS ? (
        <p>
          <button type="button" onClick={() => void load(cursor)}>
            Load more
          </button>
        </p>
      ) : null}
    </main>
  );
}
