/**
 * The dashboard's router: the History API, no dependency. `usePath()` is the current path
 * (re-rendering on back/forward and on `navigate`), `<Link>` navigates without a reload
 * (a modified click still opens a new tab), and `matchRoute` reads parameters.
 */
import { useSyncExternalStore, type MouseEvent, type ReactNode } from 'react';

const NAVIGATE = 'kiln:navigate';

function subscribe(fn: () => void): () => void {
  window.addEventListener('popstate', fn);
  window.addEventListener(NAVIGATE, fn);
  return () => {
    window.removeEventListener('popstate', fn);
    window.removeEventListener(NAVIGATE, fn);
  };
}

const pathNow = () => window.location.pathname;
const searchNow = () => window.location.search;

export function usePath(): string {
  return useSyncExternalStore(subscribe, pathNow);
}

export function useSearch(): URLSearchParams {
  const search = useSyncExternalStore(subscribe, searchNow);
  return new URLSearchParams(search);
}

/** Goes to `to` (a path with an optional query); `replace` keeps the history entry. */
export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  if (to === window.location.pathname + window.location.search) return;
  if (opts.replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  window.dispatchEvent(new Event(NAVIGATE));
}

/** The parameters of `path` for a pattern such as `/builds/:id`, or null when it does not match. */
export function matchRoute(pattern: string, path: string): Map<string, string> | null {
  const p = pattern.split('/');
  const s = path.replace(/\/+$/, '').split('/');
  if (p.length !== s.length) return null;
  const out = new Map<string, string>();
  for (let i = 0; i < p.length; i++) {
    const want = p[i]!;
    const got = s[i]!;
    if (want.startsWith(':')) {
      if (got === '') return null;
      try {
        out.set(want.slice(1), decodeURIComponent(got));
      } catch {
        return null;
      }
    } else if (want !== got) return null;
  }
  return out;
}

export function Link(props: { to: string; className?: string; children: ReactNode; title?: string; current?: boolean }) {
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(props.to);
  };
  return (
    <a href={props.to} className={props.className} title={props.title} onClick={onClick} aria-current={props.current ? 'page' : undefined}>
      {props.children}
    </a>
  );
}
