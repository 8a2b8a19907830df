/**
 * Picks the log store (issue 14): the file store in the data dir (the embedded coordinator,
 * the default), or the shared PostgreSQL store when the coordinator's state is in PostgreSQL
 * (several coordinators; a standby that takes over serves every build's logs). The PostgreSQL
 * store imports no driver itself (it is handed the opened client), so the embedded
 * coordinator loads none.
 */
import type { PgClient } from '../state/pg/pg-client.js';
import type { FenceToken } from '../state/pg/pg-state-backend.js';
import { LogStore } from './log-store.js';
import type { LogStorage } from './log-storage.js';
import { PgLogStore } from './pg-log-store.js';

export interface SharedLogOptions {
  /** The coordinator's client on the state database (migrated: m003 has the log tables). */
  pg: PgClient;
  /** The leader lease's token, read at each write (null: not the leader, nothing is written). */
  fence: () => FenceToken | null;
  /** The database went away or came back (writes wait meanwhile: not ready). */
  onHealth?: (healthy: boolean, err?: Error) => void;
}

export function createLogStore(dataDir: string, shared: SharedLogOptions | null): LogStorage {
  if (!shared) return new LogStore(dataDir);
  return new PgLogStore({ pg: shared.pg, fence: shared.fence, ...(shared.onHealth ? { onHealth: shared.onHealth } : {}) });
}
