/**
 * Which coordinator the agent connects to next (issue 14), kept apart from the socket code
 * so it can be driven step by step in tests. The agent starts on the first coordinator of
 * its list. When a connection ends:
 *
 * - a NOT_LEADER close whose reason names a coordinator of the list (compared by
 *   normalised origin, shared/coordinator-list.ts) moves there at once, without a backoff;
 *   at most one such hop per coordinator of the list between two welcomes, so two standbys
 *   naming each other (a stale view during an election) cannot make a tight loop;
 * - anything else (a refused or failed connection, a drop, a NOT_LEADER naming no one or a
 *   coordinator outside the list) moves to the next coordinator of the list;
 * - the backoff (the agent's, unchanged) is taken once the whole list ended in a row
 *   without a welcome: with one coordinator, after every end, exactly as before lists;
 *   when a coordinator of that round answered NOT_LEADER (a standby is up: an election is
 *   under way, or just ended), `election` says so and the agent waits at most a second, so it
 *   reaches the new leader soon after the takeover instead of after a grown backoff.
 */
import { coordinatorKey, indexOfCoordinator } from '../shared/core.js';
import type { CoordinatorEndpoint } from './config.js';

/** How a connection to the current coordinator ended, as far as choosing the next one goes. */
export interface ConnectionEnd {
  /** Set for a NOT_LEADER close: the leader its reason names (null: `leader unknown`). */
  leader?: string | null;
}

export interface NextCoordinator {
  endpoint: CoordinatorEndpoint;
  /** Wait the backoff before connecting (the whole list failed in a row). */
  backoff: boolean;
  /** Why the agent moves (or stays), for its log. */
  why: string;
  /** A coordinator answered NOT_LEADER since the last welcome (a standby is up): keep the wait short. */
  election: boolean;
}

export class CoordinatorRing {
  private index = 0;
  /** Connections ended since the last welcome. */
  private endsInRow = 0;
  /** NOT_LEADER hops taken since the last welcome. */
  private hopsInRow = 0;
  /** A NOT_LEADER answer since the last welcome. */
  private standbySeen = false;
  private readonly keys: string[];

  constructor(readonly endpoints: readonly CoordinatorEndpoint[]) {
    if (endpoints.length === 0) throw new Error('CoordinatorRing: no coordinator');
    this.keys = endpoints.map((e) => coordinatorKey(e.wsUrl) ?? e.wsUrl);
  }

  get current(): CoordinatorEndpoint {
    return this.endpoints[this.index]!;
  }

  get size(): number {
    return this.endpoints.length;
  }

  /** The coordinator welcomed the agent: a later end starts a new round. */
  welcomed(): void {
    this.endsInRow = 0;
    this.hopsInRow = 0;
    this.standbySeen = false;
  }

  /** Where to connect after the connection to `current` ended. */
  next(end: ConnectionEnd): NextCoordinator {
    this.endsInRow++;
    const from = this.current.httpUrl;
    const n = this.endpoints.length;
    let why: string;
    if (end.leader !== undefined) this.standbySeen = true;
    if (end.leader !== undefined) {
      const i = indexOfCoordinator(this.keys, end.leader);
      if (i >= 0 && i !== this.index && this.hopsInRow < n) {
        this.hopsInRow++;
        this.index = i;
        return { endpoint: this.current, backoff: false, why: `${from} is not the leader; it names ${end.leader}`, election: true };
      }
      why =
        end.leader === null
          ? `${from} is not the leader and knows none yet`
          : i < 0
            ? `${from} is not the leader; the leader it names (${end.leader}) is not in the coordinator list`
            : i === this.index
              ? `${from} is not the leader yet names itself`
              : `${from} is not the leader; not following it to ${end.leader} again before a welcome`;
    } else {
      why = `the connection to ${from} ended`;
    }
    this.index = (this.index + 1) % n;
    return { endpoint: this.current, backoff: this.endsInRow % n === 0, why, election: this.standbySeen };
  }
}
