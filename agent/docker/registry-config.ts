/**
 * The one place that builds a build's `registryconfig` (registry host -> credentials, the
 * shape of the Engine API's X-Registry-Config; this engine's BuildKit takes them through
 * the agent's build session, docker/build-session.ts) from what an assignment carries. The
 * coordinator sends only those of the registries the node pushes to or pulls from (its
 * Dockerfile's FROM, `COPY --from=`, `RUN --mount=from=` images, its layer-cache ref), so
 * all of them go to the build: BuildKit uses them to pull private base images and to
 * import the layer cache (`cachefrom`). Never logged.
 *
 * Docker Hub credentials (host `docker.io`) are also keyed by the index address the engine
 * looks them up under. BuildKit of Docker 20.10 takes a username with a password (or an
 * identity token) for pulls; a bearer token alone (`token_file`) serves pushes only.
 */
import type { AssignPayload } from '../../shared/core.js';
import { registryAuthLookup, type RegistryAuth } from './image-push.js';

/** The key Docker uses for Docker Hub credentials. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

/** host -> credentials for the build, or null when the assignment carries none. */
export function registryConfig(given: AssignPayload['registry_auth']): Record<string, RegistryAuth> | null {
  if (!given || given.length === 0) return null;
  const lookup = registryAuthLookup(given);
  // The header is a JSON object keyed by host; hosts come from the coordinator's checked config.
  const out: Record<string, RegistryAuth> = {};
  for (const { host } of given) {
    const auth = lookup(host);
    if (!auth) continue;
    out[host.toLowerCase()] = auth;
    if (host === 'docker.io') out[DOCKER_HUB_AUTH_KEY] = { ...auth, serveraddress: DOCKER_HUB_AUTH_KEY };
  }
  return out;
}

/** What BuildKit and registries say when a pull is refused for credentials. */
const REFUSED_RE = /\b401\b|\b403\b|unauthorized|failed to authorize|authentication required|no basic auth credentials|access denied|denied:/i;

/**
 * A failed build's error with what the refusal means, when BuildKit's error says a
 * registry the build pulls from (`pullHosts`) refused it for credentials: names the
 * registry and whether the coordinator had credentials for it. Otherwise the error as is.
 */
export function explainPullRefusal(error: string, pullHosts: readonly string[], given: AssignPayload['registry_auth']): string {
  if (!REFUSED_RE.test(error)) return error;
  const host = pullHosts.find((h) => error.includes(h)) ?? (pullHosts.length === 1 ? pullHosts[0] : undefined);
  if (host === undefined) return error;
  const has = (given ?? []).some((a) => a.host === host);
  const hint = has ? `the registry ${host} refused the credentials the coordinator has for it` : `pulling from ${host} needs credentials and none for ${host} are configured on the coordinator (registries.credentials_file)`;
  return `${error} (${hint})`;
}
