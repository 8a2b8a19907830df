/**
 * The states of builds, nodes, attempts and agents, and every allowed transition, in one
 * place.
 *
 * Terminology: a *build* is one submitted DAG; a *node* is one vertex of it (one BuildKit
 * build); an *attempt* is one dispatch of a node to an agent. A node that an agent loses
 * gets a new attempt; everything an agent sends names its attempt, and only the node's
 * current attempt can change the node.
 *
 * The coordinator changes states only through `nodeTransition` / `attemptTransition`,
 * which throw on a transition not listed here, and derives the build state from its
 * nodes with `deriveBuildState` (a build has no independent transitions except the
 * `cancel_requested` flag). The agent registry changes an agent's state only through
 * `agentTransition`.
 */

/**
 * Node states:
 * - `pending`: waiting for the nodes it `needs` to succeed.
 * - `ready`: every need succeeded (or it has none); queued for an agent with the exact
 *   platform, the required labels and a free slot.
 * - `assigned`: pushed to an agent in an `assign` frame; the agent has not said `started`.
 * - `running`: the agent reported `started`; the BuildKit build is under way. A node whose
 *   identical twin is being built right now (shared execution) is `running` too, with no
 *   attempt of its own in flight, until the twin finishes.
 * - `success`: the current attempt finished with an image (and its outputs), or the node
 *   was *reused*: an identical node (same idempotency key) already succeeded, or was being
 *   built and succeeded, so its image and outputs are this node's too.
 * - `failed`: the current attempt failed (a RUN exited non-zero, the test exited non-zero,
 *   the build timed out, ...), or infrastructure failures (lost agent, Docker Engine down,
 *   disk full) used up the attempt budget (3; 1 with `retry: false`), which also puts the
 *   node on the dead-letter list. Every node downstream becomes `skipped`. Terminal, except
 *   that a retry from the API (`POST .../nodes/{node}/retry`) makes it `ready` again.
 * - `skipped`: a node it needs (directly or not) failed, was skipped or was cancelled. A
 *   retry of the failed node upstream makes it `pending` again.
 * - `cancelled`: the build was cancelled before this node finished.
 */
export const NODE_STATES = ['pending', 'ready', 'assigned', 'running', 'success', 'failed', 'skipped', 'cancelled'] as const;
export type NodeState = (typeof NODE_STATES)[number];

/**
 * Build states, derived from the node states:
 * - `pending`: no node has been dispatched yet.
 * - `running`: at least one node was dispatched (now or before a retry) and some node is
 *   not terminal.
 * - `success`: every node succeeded.
 * - `failed`: every node is terminal, some failed (or were skipped), and no leaf succeeded.
 * - `partial`: every node is terminal; some leaves (nodes nobody needs) succeeded and
 *   others did not.
 * - `cancelled`: a cancel was requested and every node is terminal.
 */
export const BUILD_STATES = ['pending', 'running', 'success', 'failed', 'partial', 'cancelled'] as const;
export type BuildState = (typeof BUILD_STATES)[number];

/**
 * Attempt states:
 * - `assigned`: sent to the agent, not yet started.
 * - `running`: the agent reported `started`.
 * - `success` / `failed`: the agent reported `finished` with that status.
 * - `cancelling`: the coordinator asked the agent to cancel and waits for its `finished`
 *   (the agent's slot stays taken until then).
 * - `cancelled`: the agent confirmed the cancel, or was gone when it was asked.
 * - `rejected`: the agent refused the assignment (no slot, unsupported platform, ...).
 * - `lost`: the agent disconnected or went silent for longer than the lost timeout, came
 *   back without this attempt, or did not accept the assignment in time.
 * `failed` with `infra: true` (and `lost`) are infrastructure failures: they count
 * against the node's attempt budget and the agent's circuit breaker, and the node is
 * queued again (preferably elsewhere) while budget is left.
 * - `reused`: the agent reported the node's base images, and the coordinator found that an
 *   identical node (same idempotency key) had succeeded or was being built; nothing was
 *   built by this attempt.
 */
export const ATTEMPT_STATES = ['assigned', 'running', 'success', 'failed', 'cancelling', 'cancelled', 'rejected', 'lost', 'reused'] as const;
export type AttemptState = (typeof ATTEMPT_STATES)[number];

/**
 * Agent states, the coordinator's view of one agent (by name):
 * - `connected`: a WebSocket is open and the hello was accepted. It gets work only once
 *   the welcome has been sent on that connection, so no assignment can overtake the
 *   welcome. A newer connection of the same agent replaces this one (`connected` again).
 * - `disconnected`: the socket closed, or the coordinator restarted while the agent held
 *   attempts (the agent is then known only from the state file until it says hello). Its
 *   attempts keep their slots until the lost timeout (the reconnect grace after a
 *   restart), so an agent that comes back in time carries on without re-running anything.
 * - `lost`: silent (connected, but no frame) or disconnected past the lost timeout; its
 *   attempts were lost and their nodes queued again elsewhere. Only a hello brings it back.
 * Every state goes to `connected` on an accepted hello. Whether a connected agent gets
 * work also depends on its operator control, its reported health and its circuit breaker;
 * those are not states of this table.
 */
export const AGENT_STATES = ['connected', 'disconnected', 'lost'] as const;
export type AgentState = (typeof AGENT_STATES)[number];

export const TERMINAL_NODE_STATES: ReadonlySet<NodeState> = new Set(['success', 'failed', 'skipped', 'cancelled']);
export const TERMINAL_BUILD_STATES: ReadonlySet<BuildState> = new Set(['success', 'failed', 'partial', 'cancelled']);
export const TERMINAL_ATTEMPT_STATES: ReadonlySet<AttemptState> = new Set(['success', 'failed', 'cancelled', 'rejected', 'lost', 'reused']);
/** Attempt states in which the attempt holds one of its agent's slots. */
export const SLOT_HOLDING_ATTEMPT_STATES: ReadonlySet<AttemptState> = new Set(['assigned', 'running', 'cancelling']);

const NODE_TRANSITIONS: Record<NodeState, readonly NodeState[]> = {
  pending: ['ready', 'skipped', 'cancelled'],
  ready: ['assigned', 'cancelled'],
  // back to `ready` when the agent rejects the assignment or is lost (re-queue)
  assigned: ['running', 'ready', 'success', 'failed', 'cancelled'],
  running: ['ready', 'success', 'failed', 'cancelled'],
  success: [],
  // only by an explicit retry from the API
  failed: ['ready'],
  skipped: ['pending'],
  cancelled: [],
};

const ATTEMPT_TRANSITIONS: Record<AttemptState, readonly AttemptState[]> = {
  assigned: ['running', 'success', 'failed', 'cancelling', 'cancelled', 'rejected', 'lost', 'reused'],
  running: ['success', 'failed', 'cancelling', 'cancelled', 'lost', 'reused'],
  cancelling: ['cancelled', 'lost'],
  success: [],
  failed: [],
  cancelled: [],
  rejected: [],
  lost: [],
  reused: [],
};

const AGENT_TRANSITIONS: Record<AgentState, readonly AgentState[]> = {
  // `connected` again: a newer connection of the same agent replaced this one
  connected: ['connected', 'disconnected', 'lost'],
  disconnected: ['connected', 'lost'],
  lost: ['connected'],
};

export function isNodeTerminal(s: NodeState): boolean {
  return TERMINAL_NODE_STATES.has(s);
}
export function isBuildTerminal(s: BuildState): boolean {
  return TERMINAL_BUILD_STATES.has(s);
}
export function isAttemptTerminal(s: AttemptState): boolean {
  return TERMINAL_ATTEMPT_STATES.has(s);
}

export function canNodeTransition(from: NodeState, to: NodeState): boolean {
  return NODE_TRANSITIONS[from].includes(to);
}
export function canAttemptTransition(from: AttemptState, to: AttemptState): boolean {
  return ATTEMPT_TRANSITIONS[from].includes(to);
}
export function canAgentTransition(from: AgentState, to: AgentState): boolean {
  return AGENT_TRANSITIONS[from].includes(to);
}

/** Returns `to` after checking the transition; throws (a coordinator bug) when it is not allowed. */
export function nodeTransition(from: NodeState, to: NodeState, what = 'node'): NodeState {
  if (!canNodeTransition(from, to)) throw new Error(`illegal ${what} transition ${from} -> ${to}`);
  return to;
}
export function attemptTransition(from: AttemptState, to: AttemptState, what = 'attempt'): AttemptState {
  if (!canAttemptTransition(from, to)) throw new Error(`illegal ${what} transition ${from} -> ${to}`);
  return to;
}
export function agentTransition(from: AgentState, to: AgentState, what = 'agent'): AgentState {
  if (!canAgentTransition(from, to)) throw new Error(`illegal ${what} transition ${from} -> ${to}`);
  return to;
}

export interface BuildStateInput {
  cancelRequested: boolean;
  /** Some node was dispatched before (a build with a retried node stays `running`). */
  started?: boolean;
  /** Number of nodes in each state. */
  counts: Readonly<Record<NodeState, number>>;
  /** Number of leaf nodes (nodes nothing needs) in state `success`. */
  leafSuccesses: number;
}

/** The build state as a function of its nodes' state counts (see BUILD_STATES). */
export function deriveBuildState(input: BuildStateInput): BuildState {
  const c = input.counts;
  const total = NODE_STATES.reduce((sum, s) => sum + c[s], 0);
  const terminal = c.success + c.failed + c.skipped + c.cancelled;
  if (terminal < total) return input.started || total - c.pending - c.ready > 0 ? 'running' : 'pending';
  if (input.cancelRequested && c.cancelled > 0) return 'cancelled';
  if (c.success === total) return 'success';
  return input.leafSuccesses > 0 ? 'partial' : 'failed';
}

export function emptyNodeCounts(): Record<NodeState, number> {
  return { pending: 0, ready: 0, assigned: 0, running: 0, success: 0, failed: 0, skipped: 0, cancelled: 0 };
}
