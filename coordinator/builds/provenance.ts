/**
 * Provenance records: for every node attempt that ran a build, a JSON document saying
 * exactly what went into it and what came out, stored in the CAS by its sha256 and linked
 * from the attempt (`provenance`). It names the node spec digest, the context and
 * Dockerfile digests, the base images as the agent's engine resolved them, every input
 * digest (and the upstream output it came from), the platform, the build args (values of
 * secret-looking ones left out), the agent and its engine, the outputs, the image id and
 * the times, and the images it pushed (ref, manifest digest, platform, size, and `sbom`:
 * the digest of the image's CycloneDX SBOM in the CAS, null when none could be made; for
 * an index node the index, the platform nodes it names and their SBOMs, `platform_sboms`),
 * and the build secrets it used, by name and version (never values).
 * Canonical JSON, so the same facts give the same digest.
 */
import { sha256, type Digest, type HelloPayload } from '../../shared/index.js';
import type { AttemptRecord, BuildRecord, NodeRecord } from '../state/records.js';
import { canonicalJson } from './canonical-json.js';

export const PROVENANCE_TYPE = 'https://kiln.dev/provenance/v1';

/** Build args whose names look like they carry secrets; their values never enter a record. */
const SECRET_ARG_RE = /(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY|AUTH)/i;

export function isSecretArg(name: string): boolean {
  return SECRET_ARG_RE.test(name);
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function provenanceRecord(build: BuildRecord, node: NodeRecord, attempt: AttemptRecord, agent: HelloPayload | null): { digest: Digest; bytes: Buffer } {
  const redacted: string[] = [];
  const kept: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(node.build_args)) {
    if (isSecretArg(k)) redacted.push(k);
    else kept.push([k, v]);
  }
  const args = Object.fromEntries(kept);
  const emulated = agent?.platforms.find((p) => p.platform === node.platform)?.emulated ?? null;
  const doc = {
    _type: PROVENANCE_TYPE,
    build: { id: build.id, name: build.name },
    node: node.name,
    attempt: { id: attempt.id, number: attempt.number, status: attempt.state, exit_code: attempt.exit_code, error: attempt.error },
    spec_digest: attempt.spec_digest,
    idempotency_key: attempt.key,
    platform: node.platform,
    emulated,
    context: node.context,
    dockerfile: { path: node.dockerfile, inline: node.dockerfile_inline !== null, digest: attempt.dockerfile_digest },
    target: node.target,
    base_images: attempt.base_images ?? [],
    inputs: node.inputs.map((i) => ({ name: i.name, digest: attempt.inputs[i.name] ?? null, from: i.from ? `${i.from.node}.${i.from.output}` : null, mount: i.mount })),
    build_args: args,
    redacted_build_args: redacted.sort(),
    agent: {
      name: attempt.agent,
      version: agent?.agent_version ?? null,
      engine: agent?.docker ? { version: agent.docker.version, api_version: agent.docker.api_version, buildkit_version: agent.docker.buildkit_version } : null,
    },
    image_id: attempt.image_id,
    outputs: attempt.outputs,
    // Absent (dropped by canonicalJson) for nodes that push nothing: their records are as before.
    images: node.images && node.images.length > 0 ? (attempt.images ?? []) : undefined,
    index_of: node.index ? node.index.map((m) => m.node) : undefined,
    matrix: node.matrix ? { ...node.matrix } : undefined,
    // Build secrets: names and versions only (absent when none).
    secrets: node.secrets && node.secrets.length > 0 ? node.secrets.map((x) => ({ name: x.name, version: x.version })) : undefined,
    started_at: iso(attempt.started_at),
    finished_at: iso(attempt.finished_at),
  };
  const bytes = Buffer.from(canonicalJson(doc));
  return { digest: sha256(bytes), bytes };
}
