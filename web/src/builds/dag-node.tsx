/**
 * One node of the DAG (a memoised React Flow custom node): name, state (icon, word and
 * colour), platform, agent, attempt, duration, cache hit/miss, reuse. Also the box drawn
 * behind the nodes fanned out from one spec node (matrix, platforms).
 */
import { Handle, Position, type Node, type NodeProps } from '@xyflow/react';
import { memo } from 'react';
import { formatDuration, formatTime, stateLook } from '../format';
import type { NodeStatus } from '../api/types';

/** `origin`: the spec node it was fanned out from, shown on the node when no group box is drawn around it. */
export type DagNodeData = { status: NodeStatus; origin: string | null };
export type DagNodeType = Node<DagNodeData, 'kiln'>;
export type DagGroupType = Node<{ origin: string; count: number }, 'kilnGroup'>;

function DagNodeBox({ data, selected }: NodeProps<DagNodeType>) {
  const s = data.status;
  const look = stateLook(s.state);
  const cache = s.cache && s.cache.hit + s.cache.miss > 0 ? `cache ${s.cache.hit}/${s.cache.hit + s.cache.miss}` : null;
  return (
    <div className={`dag-node ${look.className}${selected ? ' selected' : ''}`} data-node={s.name} aria-label={`${s.name}: ${look.label}`}>
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <div className="dag-node-head">
        <span className="state-icon" aria-hidden="true">
          {look.icon}
        </span>
        <span className="dag-node-name" title={s.name}>
          {s.name}
        </span>
      </div>
      <div className="dag-node-row">
        <span className="state-word">{look.label}</span>
        {data.origin !== null ? (
          <span className="tag" title={`fanned out from ${data.origin} (matrix or platforms)`}>
            ⧉ {data.origin}
          </span>
        ) : null}
        {s.reused ? <span className="tag">reused</span> : null}
        {cache ? <span className="tag" title={`layer cache: ${s.cache!.hit} steps cached, ${s.cache!.miss} built`}>{cache}</span> : null}
      </div>
      <div className="dag-node-row dim">
        <span title="platform">{s.platform}</span>
        {s.agent ? <span title="agent">@{s.agent}</span> : null}
      </div>
      <div className="dag-node-row dim">
        {s.attempt > 1 ? <span title="attempts">#{s.attempt}</span> : null}
        <span title="duration">{s.duration_ms !== null ? formatDuration(s.duration_ms) : s.started_at ? `since ${formatTime(s.started_at)}` : (s.waiting ?? '')}</span>
      </div>
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
}

export const DagNode = memo(DagNodeBox);

function DagGroupBox({ data }: NodeProps<DagGroupType>) {
  return (
    <div className="dag-group" aria-hidden="true">
      <span className="dag-group-title">
        {data.origin} ×{data.count}
      </span>
    </div>
  );
}

export const DagGroup = memo(DagGroupBox);
