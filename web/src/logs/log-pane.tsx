/**
 * PLACEHOLDER until the merge: the logview helper's web/src/logs/log-pane.tsx replaces this
 * file (the integrator keeps theirs). Same props; shows a link to the node's raw log.
 */
import { apiPath } from '../../../shared/api-paths.js';
import type { Scope } from '../api/types';

export function LogPane(props: { buildId: string; node: string; scopes: ReadonlySet<Scope> }) {
  return (
    <p className="dim">
      <a href={apiPath.nodeLogs(props.buildId, props.node)} target="_blank" rel="noreferrer">
        raw log of {props.node}
      </a>
    </p>
  );
}
