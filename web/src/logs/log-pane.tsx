/**
 * `<LogPane buildId node scopes />`: one node's log, live. The stream (log-stream.ts)
 * feeds the model (log-model.ts); this view renders only the rows on screen
 * (@tanstack/react-virtual, fixed row height, no wrapping: long lines scroll sideways), so
 * 200,000 lines cost what 60 do. Updates are batched to one render per animation frame.
 *
 * - Follows the tail; scrolling up stops following, "Jump to bottom" (or End, or
 *   scrolling back to the bottom) resumes it.
 * - "First error" jumps to the first error line (log-errors.ts); error lines and
 *   BuildKit's error blocks are highlighted.
 * - Search over the model's lines (not the DOM): Enter / Shift+Enter step through hits,
 *   `/` focuses the search field, Escape clears it.
 * - Line numbers are deep links (`#L123`, shift-click for `#L10-L20`); opening the page
 *   with such a hash scrolls there once the line has arrived.
 * - http(s) URLs in the log are links (new tab, no referrer).
 * - "Download raw log": the node log route without follow, as an attachment.
 * - Rows carry `data-line` (1-based); appends and renders leave performance marks
 *   (log-timings.ts) for the browser tests.
 */
import { useVirtualizer } from '@tanstack/react-virtual';
import { memo, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent, type MouseEvent, type ReactNode } from 'react';
import type { StatusEventDataT } from '../../../shared/log-events.js';
import { extendRange, lineHash, parseLineHash, type LineRange } from './log-anchor.js';
import { LINE_ERROR, LINE_ERROR_CONTEXT } from './log-errors.js';
import { LogModel } from './log-model.js';
import { cutSegments, linkRanges, LogSearch, makeMatcher, markMatches, matchRanges, type MarkedSegment } from './log-search.js';
import { followNodeLog, logDownloadUrl, type LogStream, type LogStreamState } from './log-stream.js';
import { markAppend, markVisible } from './log-timings.js';
import { followAfterScroll } from './tail-follow.js';
import './log.css';

/** Height of one row in px (log.css sets the same line height). */
export const LOG_ROW_HEIGHT = 18;

export interface LogPaneProps {
  readonly buildId: string;
  readonly node: string;
  readonly scopes: ReadonlySet<'read' | 'submit' | 'cancel' | 'admin'>;
  /** The node's attempt count, if the page knows it: when it grows after the stream ended (a retry), the stream resumes. */
  readonly attempt?: number;
}

interface Follow {
  readonly model: LogModel;
  readonly version: number;
  readonly conn: LogStreamState;
  readonly status: StatusEventDataT | null;
  readonly problem: string | null;
  readonly stream: LogStream | null;
}

/** Opens the stream for (buildId, node) into a fresh model; re-renders at most once per frame. */
function useLogFollow(buildId: string, node: string): Follow {
  const [model, setModel] = useState(() => new LogModel());
  const [version, setVersion] = useState(0);
  const [conn, setConn] = useState<LogStreamState>('connecting');
  const [status, setStatus] = useState<StatusEventDataT | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [stream, setStream] = useState<LogStream | null>(null);

  useEffect(() => {
    const m = new LogModel();
    setModel(m);
    setVersion(m.version);
    setConn('connecting');
    setStatus(null);
    setProblem(null);
    let frame = 0;
    const schedule = () => {
      if (frame === 0) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          setVersion(m.version);
        });
      }
    };
    const s = followNodeLog({
      buildId,
      node,
      onText: (text) => {
        const r = m.append(text);
        markAppend(node, r.firstChanged + 1, r.lineCount);
        schedule();
      },
      onStatus: setStatus,
      onState: setConn,
      onProblem: setProblem,
      onEnd: () => {
        m.finish();
        schedule();
      },
    });
    setStream(s);
    return () => {
      s.close();
      if (frame !== 0) cancelAnimationFrame(frame);
    };
  }, [buildId, node]);

  return { model, version, conn, status, problem, stream };
}

const CONN_LABEL: Record<LogStreamState, string> = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', ended: 'ended' };

interface RowProps {
  readonly model: LogModel;
  readonly index: number;
  /** Changes when the row's content may have (the partial last line). */
  readonly rev: number;
  readonly top: number;
  readonly selected: boolean;
  readonly current: boolean;
  readonly matcher: RegExp | null;
}

function piece(s: MarkedSegment, key: number): ReactNode {
  const style = s.style.color !== null || s.style.background !== null ? { color: s.style.color ?? undefined, backgroundColor: s.style.background ?? undefined } : undefined;
  const className = s.style.className || undefined;
  if (s.match) return <mark key={key} className={className ? `log-match ${className}` : 'log-match'} style={style}>{s.text}</mark>;
  return className || style ? <span key={key} className={className} style={style}>{s.text}</span> : s.text;
}

/** A line's text as styled pieces, search matches marked, URLs as links (opened in a new tab). */
function lineContent(model: LogModel, index: number, matcher: RegExp | null): ReactNode[] {
  const text = model.text(index);
  const marked: MarkedSegment[] = matcher ? markMatches(model.segments(index), matchRanges(text, matcher)) : model.segments(index).map((s) => ({ ...s, match: false }));
  const links = linkRanges(text);
  const pieces = cutSegments(marked, links);
  const out: ReactNode[] = [];
  for (let k = 0; k < pieces.length; ) {
    const r = pieces[k]!.range;
    if (r < 0) {
      out.push(piece(pieces[k]!, k));
      k++;
      continue;
    }
    const group: ReactNode[] = [];
    const first = k;
    for (; k < pieces.length && pieces[k]!.range === r; k++) group.push(piece(pieces[k]!, k));
    const [a, b] = links[r]!;
    out.push(
      <a key={`link${first}`} className="log-link" href={text.slice(a, b)} target="_blank" rel="noopener noreferrer nofollow">
        {group}
      </a>,
    );
  }
  return out;
}

const LogRow = memo(function LogRow({ model, index, top, selected, current, matcher }: RowProps) {
  const n = index + 1;
  const flag = model.flag(index);
  const cls = ['log-row', flag === LINE_ERROR ? 'log-row-error' : flag === LINE_ERROR_CONTEXT ? 'log-row-context' : '', selected ? 'log-row-selected' : '', current ? 'log-row-current' : '']
    .filter(Boolean)
    .join(' ');
  return (
    <div className={cls} data-line={n} style={{ transform: `translateY(${top}px)` }}>
      <a className="log-ln" href={`#L${n}`} data-n={n} tabIndex={-1}>
        {n}
      </a>
      <span className="log-text">{lineContent(model, index, matcher)}</span>
    </div>
  );
});

export function LogPane({ buildId, node, attempt }: LogPaneProps): ReactNode {
  const { model, version, conn, status, problem, stream } = useLogFollow(buildId, node);
  const scrollRef = useRef<HTMLDivElement>(null);
  const searchRef = useRef<HTMLInputElement>(null);
  const lastTop = useRef(0);
  const [selection, setSelection] = useState<LineRange | null>(() => (typeof location === 'undefined' ? null : parseLineHash(location.hash)));
  const [following, setFollowing] = useState(() => selection === null);
  /** A line (1-based) to scroll to once it has arrived (a deep link). */
  const pendingJump = useRef<number | null>(selection?.first ?? null);
  const [query, setQuery] = useState('');
  const [debounced, setDebounced] = useState('');
  const [caseSensitive, setCaseSensitive] = useState(false);
  const [regex, setRegex] = useState(false);
  const [currentHit, setCurrentHit] = useState(-1);

  // a retried node writes more: open the stream again from where it ended
  useEffect(() => {
    if (attempt !== undefined) stream?.resume();
  }, [attempt, stream]);

  const count = model.lineCount;
  const virtualizer = useVirtualizer({ count, getScrollElement: () => scrollRef.current, estimateSize: () => LOG_ROW_HEIGHT, overscan: 30 });

  const scrollToLine = useCallback((index: number) => {
    const el = scrollRef.current;
    setFollowing(false);
    if (!el) return;
    el.scrollTop = Math.max(0, index * LOG_ROW_HEIGHT - el.clientHeight / 2 + LOG_ROW_HEIGHT / 2);
    lastTop.current = el.scrollTop;
  }, []);

  const toBottom = useCallback(() => {
    setFollowing(true);
    const el = scrollRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, []);

  // follow the tail: after the rows are laid out, before paint
  useLayoutEffect(() => {
    const el = scrollRef.current;
    if (!el) return;
    const jump = pendingJump.current;
    if (jump !== null && count >= jump) {
      pendingJump.current = null;
      scrollToLine(jump - 1);
      return;
    }
    if (following) {
      el.scrollTop = el.scrollHeight;
      lastTop.current = el.scrollTop;
    }
  }, [version, count, following, scrollToLine]);

  // timing mark for the browser tests: what is on screen now
  useEffect(() => {
    if (count === 0) return;
    const items = virtualizer.getVirtualItems();
    const last = items[items.length - 1];
    if (last) markVisible(node, Math.min(count, last.index + 1));
  }, [version, count, node, virtualizer]);

  const onScroll = useCallback(() => {
    const el = scrollRef.current;
    if (!el) return;
    const previous = lastTop.current;
    const pos = { scrollTop: el.scrollTop, scrollHeight: el.scrollHeight, clientHeight: el.clientHeight };
    lastTop.current = pos.scrollTop;
    setFollowing((f) => followAfterScroll(f, previous, pos, LOG_ROW_HEIGHT));
  }, []);

  // deep links: the hash changes (back/forward, a pasted link)
  useEffect(() => {
    const onHash = () => {
      const r = parseLineHash(location.hash);
      if (!r) return;
      setSelection(r);
      pendingJump.current = r.first;
      setFollowing(false);
      if (model.lineCount >= r.first) {
        pendingJump.current = null;
        scrollToLine(r.first - 1);
      }
    };
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, [model, scrollToLine]);

  const onRowsClick = useCallback(
    (e: MouseEvent<HTMLDivElement>) => {
      const a = (e.target as HTMLElement).closest('a.log-ln');
      if (!a) return;
      e.preventDefault();
      const n = Number(a.getAttribute('data-n'));
      const r = extendRange(selection, n, e.shiftKey);
      setSelection(r);
      setFollowing(false);
      history.replaceState(history.state, '', lineHash(r));
    },
    [selection],
  );

  // search: debounced, over the model's lines; extended as lines arrive
  useEffect(() => {
    const t = setTimeout(() => setDebounced(query), count > 25_000 ? 150 : 50);
    return () => clearTimeout(t);
  }, [query, count]);
  const matcher = useMemo(() => makeMatcher(debounced, { caseSensitive, regex }), [debounced, caseSensitive, regex]);
  const search = useMemo(() => (matcher instanceof RegExp ? new LogSearch(matcher) : null), [matcher, model]);
  const hits = useMemo(() => {
    search?.update(model);
    return search?.hits.length ?? 0;
  }, [search, model, version]);

  const step = useCallback(
    (direction: 1 | -1) => {
      if (!search) return;
      const from = currentHit >= 0 ? currentHit : (virtualizer.getVirtualItems()[0]?.index ?? 0) - (direction === 1 ? 1 : 0);
      const next = search.step(from, direction);
      if (next < 0) return;
      setCurrentHit(next);
      scrollToLine(next);
    },
    [search, currentHit, virtualizer, scrollToLine],
  );

  const onSearchKey = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      step(e.shiftKey ? -1 : 1);
    } else if (e.key === 'Escape' && query !== '') {
      // clears the search; with nothing to clear, Escape goes on to the page (which may close the pane)
      e.stopPropagation();
      setQuery('');
      setCurrentHit(-1);
    }
  };

  const onPaneKey = (e: KeyboardEvent<HTMLDivElement>) => {
    if (e.key === '/' && !(e.target instanceof HTMLInputElement)) {
      e.preventDefault();
      searchRef.current?.focus();
    } else if (e.key === 'End' && e.target === scrollRef.current) {
      e.preventDefault();
      toBottom();
    }
  };

  const firstError = model.firstError;
  const jumpToError = () => {
    if (firstError < 0) return;
    const r = { first: firstError + 1, last: firstError + 1 };
    setSelection(r);
    history.replaceState(history.state, '', lineHash(r));
    scrollToLine(firstError);
  };

  const matchForRows = matcher instanceof RegExp ? matcher : null;
  const searchError = matcher !== null && !(matcher instanceof RegExp) ? matcher.error : null;
  const items = virtualizer.getVirtualItems();

  return (
    <section className="log-pane" aria-label={`Log of ${node}`} data-state={conn} data-lines={count} data-following={following} onKeyDown={onPaneKey}>
      <div className="log-toolbar" role="toolbar" aria-label="Log tools">
        <span className={`log-conn log-conn-${conn}`} role="status">
          {CONN_LABEL[conn]}
        </span>
        {status && (
          <span className="log-node-state">
            {status.state} · attempt {status.attempt}
          </span>
        )}
        <span className="log-count">{count.toLocaleString()} lines</span>
        <span className="log-search">
          <input
            ref={searchRef}
            type="search"
            placeholder="Search (/)"
            aria-label="Search the log"
            value={query}
            maxLength={200}
            onChange={(e) => {
              setQuery(e.target.value);
              setCurrentHit(-1);
            }}
            onKeyDown={onSearchKey}
            aria-invalid={searchError !== null}
          />
          <label title="Match case">
            <input type="checkbox" checked={caseSensitive} onChange={(e) => setCaseSensitive(e.target.checked)} /> Aa
          </label>
          <label title="Regular expression">
            <input type="checkbox" checked={regex} onChange={(e) => setRegex(e.target.checked)} /> .*
          </label>
          {search && (
            <span className="log-hits" aria-live="polite">
              {hits === 0 ? 'no match' : `${currentHit >= 0 ? `${search.hits.indexOf(currentHit) + 1} of ` : ''}${hits.toLocaleString()}${search.truncated ? '+' : ''} lines`}
            </span>
          )}
          {searchError && <span className="log-search-error">{searchError}</span>}
          <button type="button" onClick={() => step(-1)} disabled={hits === 0} aria-label="Previous match">
            ↑
          </button>
          <button type="button" onClick={() => step(1)} disabled={hits === 0} aria-label="Next match">
            ↓
          </button>
        </span>
        <button type="button" className="log-first-error" onClick={jumpToError} disabled={firstError < 0}>
          First error{firstError >= 0 ? ` (L${firstError + 1})` : ''}
        </button>
        <a className="log-download" href={logDownloadUrl(buildId, node)} download={`${buildId}-${node}.log`}>
          Download raw log
        </a>
      </div>
      {problem && (
        <div className="log-problem" role="alert">
          {problem}
        </div>
      )}
      <div className="log-scroll" ref={scrollRef} onScroll={onScroll} tabIndex={0} role="region" aria-label={`${node} log lines`}>
        <div className="log-rows" style={{ height: virtualizer.getTotalSize() }} onClick={onRowsClick}>
          {items.map((it) => (
            <LogRow
              key={it.index}
              model={model}
              index={it.index}
              rev={it.index >= model.completeLines - 1 ? version : 0}
              top={it.start}
              selected={selection !== null && it.index + 1 >= selection.first && it.index + 1 <= selection.last}
              current={it.index === currentHit}
              matcher={matchForRows}
            />
          ))}
        </div>
        {count === 0 && <div className="log-empty">{conn === 'ended' ? 'No log output.' : 'Waiting for log output…'}</div>}
      </div>
      {!following && (
        <button type="button" className="log-to-bottom" onClick={toBottom}>
          Jump to bottom ↓
        </button>
      )}
    </section>
  );
}
