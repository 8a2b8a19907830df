/**
 * The agent <-> coordinator WebSocket protocol, as data.
 *
 * Every frame is one envelope `{v, type, id, payload}` encoded with msgpackr (see
 * codec.ts). `MESSAGES` maps each `type` to the zod schema of its payload and the
 * direction it may travel; TypeScript types are inferred from the schemas, and both ends
 * validate every frame they send and receive.
 *
 * Flow: the agent opens the socket with its token and sends `hello` (capabilities,
 * protocol versions it speaks, attempts it is still running). The coordinator answers
 * `welcome` (chosen version, heartbeat interval) or closes with a reason. Then:
 *   coordinator -> agent: assign, proceed, cancel, ack, error
 *   agent -> coordinator: heartbeat, accept, reject, resolved, started, log, finished, error
 * Reuse: an `assign` with `resolve: true` asks the agent to report, before it builds, what
 * the engine resolves the node's base images to (`resolved`); the coordinator then either
 * says `proceed` (build it) or `cancel`s the attempt because an identical node's result
 * exists (or is being built) and is reused.
 * The coordinator acks `heartbeat` (so the agent can tell a dead link), `log` (with the
 * byte offset it has written, so the agent can resend from there after a reconnect) and
 * `finished` (only after the result is committed to disk; the agent resends it until then).
 */
import { z } from 'zod';
import { ENV_NAME_RE, LABEL_KEY_RE, LABEL_KEY_RULE, NAME_RE, NAME_RULE } from '../names.js';
import { MAX_NODE_SECRETS, MAX_SECRET_BYTES, SECRET_NAME_RE, SECRET_NAME_RULE } from '../secret-names.js';

/**
 * Protocol versions this build of kiln speaks. The hello is the same in every version.
 * 2 (issue 11): `assign` may carry `images`, `index`, `registry_auth` and `cache`, and
 * `finished` `images` and `cache`; a version-1 agent would refuse such frames (the
 * schemas are strict), so it is refused at its hello with a message naming both versions.
 * 3 (issue 12): `assign` may carry `secrets` and `secret_values` (a node that names build
 * secrets) and `traceparent` (a coordinator that traces); a version-2 agent would refuse
 * such frames, so it is refused at its hello like a version-1 agent. Agents and the
 * coordinator upgrade together (install-agent.sh --upgrade drains and replaces the agent).
 */
export const PROTOCOL_VERSIONS = [3] as const;
export const PROTOCOL_VERSION = 3;

/** Largest frame either side accepts (ws `maxPayload`). */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
/** Largest log payload in one `log` frame. */
export const MAX_LOG_CHUNK_BYTES = 64 * 1024;

/** WebSocket close codes kiln uses (4000-4999 are for applications). */
/** Where agents open their WebSocket on the coordinator's HTTP server. */
export const AGENT_SOCKET_PATH = '/api/v1/agent';

export const CLOSE_CODES = {
  /** A normal close. */
  NORMAL: 1000,
  /** The sending end is going away: the coordinator shutting down (reconnect later), or an agent shutting down cleanly (a departure, not a loss). */
  GOING_AWAY: 1001,
  /** No close frame: the connection was reset or dropped (ws reports it, never sent). */
  ABNORMAL: 1006,
  /** The coordinator failed handling a frame; the agent reconnects. */
  INTERNAL_ERROR: 1011,
  /** No protocol version in common; the agent must not retry. */
  PROTOCOL_VERSION: 4002,
  /** A frame could not be decoded or failed validation. */
  INVALID_FRAME: 4003,
  /** No frame from the agent within the lost timeout. */
  HEARTBEAT_TIMEOUT: 4008,
  /** Another agent process with the same name is connected. */
  NAME_IN_USE: 4009,
  /** The same agent process opened a newer connection. */
  REPLACED: 4010,
  /** The hello did not arrive in time. */
  HELLO_TIMEOUT: 4011,
  /**
   * The agent shut down cleanly (drained, or cancelled what it ran): a departure, not a loss.
   * An application code, not GOING_AWAY: a proxy restarting sends 1001 too, and taking that
   * for a departure would requeue (and so run twice) what the agent still runs.
   */
  AGENT_SHUTDOWN: 4012,
  /** The agent's credential was revoked by an admin: the agent must not reconnect (it exits with EX_CONFIG). */
  CREDENTIAL_REVOKED: 4013,
  /** The hello names another agent than the credential was issued to; the agent must not retry. */
  CREDENTIAL_NAME: 4014,
  /** An admin asked this agent to rotate its credential: it gets a new one (HTTP) and reconnects with it. */
  CREDENTIAL_ROTATE: 4015,
  /**
   * This coordinator is a standby: the close reason is `leader <url>` (or `leader unknown`
   * during an election). The agent connects to that URL when it is one of its configured
   * coordinators, else to the next one in its list.
   */
  NOT_LEADER: 4016,
} as const;

const Name = z.string().regex(NAME_RE, `must be ${NAME_RULE}`);
/** Keys checked by shape (a record would silently drop a `__proto__` key; these shapes cannot hold one). */
const EnvMap = z.record(z.string().regex(ENV_NAME_RE, 'must be a variable name'), z.string());
const AttemptId = z.string().min(1).max(80);
const Millis = z.number().int().nonnegative();

export const PlatformCap = z.strictObject({
  platform: z.string().min(1).max(64),
  /** true when the agent runs this platform under qemu emulation. */
  emulated: z.boolean(),
});

export const GpuInfo = z.strictObject({
  index: z.number().int().nonnegative(),
  model: z.string(),
  memory_mib: z.number().int().nonnegative(),
  uuid: z.string().nullable(),
});

export const DockerInfo = z.strictObject({
  version: z.string(),
  api_version: z.string(),
  os: z.string(),
  arch: z.string(),
  /** BuildKit version when the engine reports one; null for engines that embed it silently. */
  buildkit_version: z.string().nullable(),
});

export const RunningAttempt = z.strictObject({
  attempt_id: AttemptId,
  /** Bytes of log the agent has produced for the attempt so far. */
  log_bytes: Millis,
});

/** Whether the agent can take work now, and why not (disk full, Docker Engine unreachable). */
export const Health = z.strictObject({
  accepting: z.boolean(),
  problem: z.string().max(2000).nullable(),
});

/** Host load, sent with every heartbeat. */
export const Load = z.strictObject({
  /** 1-minute load average and number of CPUs. */
  load1: z.number().nonnegative(),
  cpus: z.number().int().positive(),
  mem_used_mib: z.number().int().nonnegative(),
  mem_total_mib: z.number().int().nonnegative(),
  /** Free space where the agent keeps its work dir and cache; null when unknown. */
  disk_free_mib: z.number().int().nonnegative().nullable(),
});

export const GpuUse = z.strictObject({
  index: z.number().int().nonnegative(),
  memory_used_mib: z.number().int().nonnegative(),
  utilization_pct: z.number().min(0).max(100).nullable(),
});

export const Hello = z.strictObject({
  protocol_versions: z.array(z.number().int().positive()).min(1).max(16),
  agent_version: z.string().max(64),
  name: Name,
  /** Random per agent process; tells a reconnect of the same process from a second process with the same name. */
  session: z.string().min(8).max(64),
  platforms: z.array(PlatformCap).min(1).max(32),
  labels: z.record(z.string().regex(LABEL_KEY_RE, `must be ${LABEL_KEY_RULE}`), z.string().max(256)),
  max_jobs: z.number().int().min(1).max(1024),
  executor: z.enum(['docker', 'noop']),
  docker: DockerInfo.nullable(),
  gpus: z.array(GpuInfo).max(64),
  running: z.array(RunningAttempt).max(1024),
  health: Health.optional(),
});

export const ResumeDecision = z.strictObject({
  attempt_id: AttemptId,
  /** continue: keep running and resend logs from `log_offset`; cancel: stop it, its result is not wanted. */
  action: z.enum(['continue', 'cancel']),
  log_offset: Millis,
});

export const Welcome = z.strictObject({
  protocol_version: z.number().int().positive(),
  coordinator_version: z.string(),
  agent_name: Name,
  heartbeat_interval_ms: Millis,
  lost_after_ms: Millis,
  max_log_chunk_bytes: z.number().int().positive(),
  /** An agent cut off from the coordinator this long cancels its running builds (S). */
  cutoff_cancel_ms: Millis,
  resume: z.array(ResumeDecision),
});

export const Heartbeat = z.strictObject({
  running: z.array(AttemptId).max(1024),
  load: Load.optional(),
  gpus: z.array(GpuUse).max(64).optional(),
  health: Health.optional(),
});

const DigestStr = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be sha256:<64 lowercase hex digits>');

export const AssignInput = z.strictObject({
  /** Stage name the Dockerfile uses for it. */
  name: z.string().max(63),
  digest: DigestStr,
  /** Bind-mount target in every RUN step, or null. */
  mount: z.string().max(4096).nullable(),
  env: EnvMap,
});

export const AssignOutput = z.strictObject({
  name: z.string().max(63),
  /** Absolute path in the built image. */
  path: z.string().max(4096),
});

export const BaseImage = z.strictObject({
  /** The reference as the Dockerfile's FROM names it (after build-arg substitution). */
  ref: z.string().max(1024),
  /** Image id (config digest) the engine resolved it to; null when the engine does not have it. */
  digest: DigestStr.nullable(),
});

export const OutputArtifact = z.strictObject({
  name: z.string().max(63),
  digest: DigestStr,
  size: Millis,
  media_type: z.string().max(200),
});

/** An image the agent pushed: the ref, the manifest digest the registry stored, its platform and size. */
export const PushedImage = z.strictObject({
  ref: z.string().max(512),
  digest: DigestStr,
  /** `linux/arm64/v8`; for a multi-platform index, its platforms joined by commas. */
  platform: z.string().max(1024),
  /** Bytes of the manifest (or index) itself, as the registry serves it. */
  size: Millis,
  media_type: z.string().max(200),
  /** The image's SBOM (CycloneDX 1.5 JSON) in the CAS; null when it could not be made, and for an index; absent from older agents. */
  sbom: DigestStr.nullable().optional(),
  /** An index: its platform images' SBOMs (from their nodes' results; nothing scanned again). */
  platform_sboms: z
    .array(z.strictObject({ platform: z.string().max(64), sbom: DigestStr.nullable() }))
    .max(64)
    .optional(),
});

/** One platform node's pushed images, for the agent assembling a multi-platform index. */
export const IndexEntry = z.strictObject({
  node: z.string().max(63),
  platform: z.string().max(64),
  images: z.array(PushedImage).max(16),
});

export const Resolved = z.strictObject({
  attempt_id: AttemptId,
  base_images: z.array(BaseImage).max(256),
  /** sha256 of the Dockerfile as written (before kiln's rewrite for inputs). */
  dockerfile_digest: DigestStr.nullable(),
});

// Layer cache (issue 11): where the agent imports and exports the node's BuildKit cache,
// and what it reports back. Absent/null: no cache registry for this node.
export const AssignCache = z.strictObject({
  /** `<registry>/<repo>:<tag>` of the node's cache for its platform. */
  ref: z.string().min(1).max(512),
  /** readwrite: import, and push after a successful build; read: import only. */
  mode: z.enum(['readwrite', 'read']),
  /** readwrite: also pushed under this versioned ref (retention keeps the last N per node and platform). */
  keep_ref: z.string().min(1).max(512).optional(),
});
export const FinishedCache = z.strictObject({
  /** Build steps BuildKit reported CACHED, and those it executed. */
  hit: Millis,
  miss: Millis,
  /** The push of the cache ref: done, failed (logged; the node still succeeds), or not tried. */
  push: z.enum(['pushed', 'failed', 'none']),
});

// Build secrets (issue 12).
const SecretName = z.string().regex(SECRET_NAME_RE, SECRET_NAME_RULE);
export const AssignSecret = z.strictObject({ name: SecretName, version: z.number().int().nonnegative() });
export const SecretValue = z.strictObject({
  name: SecretName,
  value: z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length <= MAX_SECRET_BYTES, `must be binary data of at most ${MAX_SECRET_BYTES} bytes`),
});

export const Assign = z.strictObject({
  attempt_id: AttemptId,
  build_id: z.string(),
  node: z.string(),
  attempt: z.number().int().positive(),
  platform: z.string(),
  /** Digest of the build context tar in the coordinator's CAS, or null for none. */
  context: z.string().nullable(),
  /** Path of the Dockerfile inside the context (when dockerfile_inline is null). */
  dockerfile: z.string().nullable(),
  dockerfile_inline: z.string().nullable(),
  build_args: EnvMap,
  target: z.string().nullable(),
  timeout_ms: Millis,
  /** Image name the agent tags the result with. */
  image_tag: z.string(),
  no_cache: z.boolean(),
  /** Artifacts to fetch from the CAS and provide as stages. */
  inputs: z.array(AssignInput).max(256),
  /** Paths to export from the built image as artifacts. */
  outputs: z.array(AssignOutput).max(256),
  /** Report `resolved` and wait for `proceed` before building (the result may be reused). */
  resolve: z.boolean(),
  /** GPUs (nvidia-smi indexes) given to this attempt alone; attached to the test container. */
  gpus: z.array(z.number().int().nonnegative()).max(64),
  /** Command run in a container of the built image after a successful build; its exit code decides. */
  test: z
    .strictObject({
      command: z.array(z.string().max(65_536)).min(1).max(1024),
      timeout_ms: Millis,
      env: EnvMap,
    })
    .nullable(),
  /** Refs to push the image to after a successful build and test (absent: none). */
  images: z.array(z.string().max(512)).max(16).optional(),
  /** An index node: put one multi-platform index of these images at `images` (no build). */
  index: z.array(IndexEntry).max(64).optional(),
  /**
   * Credentials of the registries this node pushes to or pulls from, from the coordinator's config (added
   * as the frame is sent; never stored). A password (Basic auth, or for a token service)
   * or a bearer token.
   */
  registry_auth: z
    .array(z.strictObject({ host: z.string().max(300), username: z.string().max(256).optional(), password: z.string().max(4096).optional(), token: z.string().max(16_384).optional() }))
    .max(16)
    .optional(),
  /** Layer cache for this attempt (see AssignCache). */
  cache: AssignCache.nullable().optional(),
  /**
   * Build secrets the node names, with the version of each the coordinator held at submit
   * (part of the reuse key; absent: none). Names and versions only, never values.
   */
  secrets: z.array(AssignSecret).max(MAX_NODE_SECRETS).optional(),
  /**
   * The values of `secrets`, added as the frame is sent to the agent running the node
   * (like `registry_auth`; never stored, journaled or logged). Served to the build through
   * its BuildKit session (`RUN --mount=type=secret,id=NAME`) and redacted from its log.
   */
  secret_values: z.array(SecretValue).max(MAX_NODE_SECRETS).optional(),
  /** W3C traceparent of the attempt's span when the coordinator traces (absent: no tracing); the agent's spans are its children. */
  traceparent: z.string().max(55).optional(),
});

export const AttemptRef = z.strictObject({ attempt_id: AttemptId });


export const Reject = z.strictObject({
  attempt_id: AttemptId,
  reason: z.string().max(2000),
});

export const Started = z.strictObject({
  attempt_id: AttemptId,
  at: Millis,
});

export const Log = z.strictObject({
  attempt_id: AttemptId,
  /** Per-attempt frame counter, from 0. */
  seq: z.number().int().nonnegative(),
  /** Byte offset of `data` within the attempt's log. */
  offset: Millis,
  data: z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'must be binary data'),
});

export const Timings = z.strictObject({
  accepted_at: Millis,
  started_at: Millis.nullable(),
  finished_at: Millis,
  /** Time spent fetching the build context from the coordinator. */
  fetch_ms: Millis,
  /** Time spent in the BuildKit build. */
  build_ms: Millis,
});

export const Finished = z.strictObject({
  attempt_id: AttemptId,
  status: z.enum(['success', 'failed', 'cancelled']),
  /** Exit code of the failing RUN step, when the failure was one. */
  exit_code: z.number().int().nullable(),
  error: z.string().max(16_384).nullable(),
  /** Name of the BuildKit step that failed. */
  failed_step: z.string().max(4096).nullable(),
  /** true when the failure was the infrastructure's (Docker unreachable, context fetch failed, disk full), not the build's. */
  infra: z.boolean(),
  /** The test command's exit code, when the node has a test and it ran. */
  test_exit_code: z.number().int().nullable().optional(),
  image_id: z.string().nullable(),
  timings: Timings,
  /** Total bytes of log the attempt produced (the coordinator checks it has them all). */
  log_bytes: Millis,
  /** Exported outputs, uploaded to the coordinator's CAS before this frame is sent. */
  outputs: z.array(OutputArtifact).max(256),
  /** Base images as the engine resolved them (for provenance); empty when unknown. */
  base_images: z.array(BaseImage).max(256),
  dockerfile_digest: DigestStr.nullable(),
  /** Images pushed (after the build and test succeeded); absent when the node pushes none. */
  images: z.array(PushedImage).max(16).optional(),
  /** Layer-cache figures of the build (docker executor; absent when it did not build). */
  cache: FinishedCache.optional(),
});

export const Cancel = z.strictObject({
  attempt_id: AttemptId,
  reason: z.string().max(2000),
});

export const Ack = z.strictObject({
  /** id of the envelope acknowledged. */
  ref: z.number().int().nonnegative(),
  attempt_id: AttemptId.optional(),
  /** For `log` acks: the attempt's log bytes the coordinator has written (resend from here). */
  log_offset: Millis.optional(),
});

export const ErrorMsg = z.strictObject({
  code: z.string(),
  message: z.string().max(16_384),
  ref: z.number().int().nonnegative().optional(),
});

type Direction = 'to_coordinator' | 'to_agent' | 'both';

/** The closed set of message types: payload schema and direction. */
export const MESSAGES = {
  hello: { schema: Hello, dir: 'to_coordinator' },
  welcome: { schema: Welcome, dir: 'to_agent' },
  heartbeat: { schema: Heartbeat, dir: 'to_coordinator' },
  assign: { schema: Assign, dir: 'to_agent' },
  accept: { schema: AttemptRef, dir: 'to_coordinator' },
  reject: { schema: Reject, dir: 'to_coordinator' },
  resolved: { schema: Resolved, dir: 'to_coordinator' },
  proceed: { schema: AttemptRef, dir: 'to_agent' },
  started: { schema: Started, dir: 'to_coordinator' },
  log: { schema: Log, dir: 'to_coordinator' },
  finished: { schema: Finished, dir: 'to_coordinator' },
  cancel: { schema: Cancel, dir: 'to_agent' },
  ack: { schema: Ack, dir: 'both' },
  error: { schema: ErrorMsg, dir: 'both' },
} as const satisfies Record<string, { schema: z.ZodType; dir: Direction }>;

export type MessageType = keyof typeof MESSAGES;
export type Payload<T extends MessageType> = z.infer<(typeof MESSAGES)[T]['schema']>;

export type HelloPayload = Payload<'hello'>;
export type WelcomePayload = Payload<'welcome'>;
export type AssignPayload = Payload<'assign'>;
export type FinishedPayload = Payload<'finished'>;
export type LogPayload = Payload<'log'>;
export type GpuInfoPayload = z.infer<typeof GpuInfo>;
export type BaseImagePayload = z.infer<typeof BaseImage>;
export type OutputArtifactPayload = z.infer<typeof OutputArtifact>;
export type PushedImagePayload = z.infer<typeof PushedImage>;
export type IndexEntryPayload = z.infer<typeof IndexEntry>;
export type ResolvedPayload = Payload<'resolved'>;
export type DockerInfoPayload = z.infer<typeof DockerInfo>;
export type PlatformCapPayload = z.infer<typeof PlatformCap>;
export type HealthPayload = z.infer<typeof Health>;
export type LoadPayload = z.infer<typeof Load>;
export type GpuUsePayload = z.infer<typeof GpuUse>;
export type HeartbeatPayload = Payload<'heartbeat'>;
export type AssignCachePayload = z.infer<typeof AssignCache>;
export type FinishedCachePayload = z.infer<typeof FinishedCache>;

export type ToCoordinatorType = { [K in MessageType]: (typeof MESSAGES)[K]['dir'] extends 'to_agent' ? never : K }[MessageType];
export type ToAgentType = { [K in MessageType]: (typeof MESSAGES)[K]['dir'] extends 'to_coordinator' ? never : K }[MessageType];

/** A decoded, validated frame: the envelope with a typed payload. */
export type Frame<T extends MessageType = MessageType> = { [K in T]: { v: number; type: K; id: number; payload: Payload<K> } }[T];
