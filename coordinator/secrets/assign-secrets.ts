/**
 * Build secrets join an assignment only on its way out to the agent running the node,
 * like registry credentials (coordinator.ts `withRegistryAuth`): the assignment the engine
 * builds, journals and keeps in its state names the secrets and their versions only, and
 * `withSecretValues` returns a copy with `secret_values` for the frame being sent. A
 * secret removed since the build was submitted is left out; the agent then fails the
 * node naming it (agent/executors/docker-executor.ts), and its build reports that.
 */
import type { Payload } from '../../shared/index.js';
import type { SecretStore } from './secret-store.js';

export function secretValuesAttacher(store: Pick<SecretStore, 'values'>): (a: Payload<'assign'>) => Payload<'assign'> {
  return (a) => {
    if (!a.secrets || a.secrets.length === 0) return a;
    return { ...a, secret_values: store.values(a.secrets.map((s) => s.name)) };
  };
}
