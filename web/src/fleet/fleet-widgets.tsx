/**
 * Small pieces of the fleet pages: an inline SVG sparkline, a clock that ticks (for ages
 * that must keep updating), and a link that lets the app shell route it.
 */
import type { MouseEvent, ReactNode } from 'react';
import { sparklinePath } from './fleet-format.js';

export { useNow } from '../use-now';

export interface SparklineProps {
  readonly values: ReadonlyArray<number | null>;
  /** The value at the top of the box. */
  readonly max: number;
  /** What it shows, for screen readers and the tooltip (`GPU 0 utilisation, last 60 heartbeats`). */
  readonly label: string;
  readonly width?: number;
  readonly height?: number;
  readonly className?: string;
}

export function Sparkline({ values, max, label, width = 80, height = 18, className }: SparklineProps): ReactNode {
  const d = sparklinePath(values, width, height, max);
  return (
    <svg className={`sparkline ${className ?? ''}`} width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={label}>
      <title>{label}</title>
      <line className="sparkline-base" x1={0} x2={width} y1={height - 0.5} y2={height - 0.5} />
      {d !== '' && <path d={d} />}
    </svg>
  );
}

/** A plain link the shell may route itself (`onNavigate`) on a plain left click; otherwise the browser follows it. */
export function AppLink({ href, onNavigate, children, className }: { href: string; onNavigate?: ((href: string) => void) | undefined; children: ReactNode; className?: string }): ReactNode {
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (!onNavigate || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    onNavigate(href);
  };
  return (
    <a href={href} onClick={onClick} className={className}>
      {children}
    </a>
  );
}
