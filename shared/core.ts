/**
 * The core of the shared package: what every kiln process needs, and all an agent may
 * import from `shared/` (the architecture test keeps it so). The protocol and its codec,
 * errors, names, ids, digests, durations, platforms, states, the HTTP route paths, the
 * logger, settings and config values, backoff, timers, verified files, archives and the
 * process lock. Not here: the HTTP API and log event schemas, the build spec schemas and
 * its parser (coordinator and CLI only, through `shared/index.ts`, which re-exports this
 * whole surface too). Loading it costs what an idle agent must carry and no more: YAML is
 * loaded by the first config file read, tar-stream by the first archive packed or
 * extracted. Every name is listed, as in index.ts.
 */
export { coerceError, errnoCode, type ErrorCode, type FieldError, isKilnError, KilnError, NotLeaderError } from './errors.js';
export { type Digest, DIGEST_RE, digestHex, hasherDigest, HEX_RE, newHasher, parseDigest, sha256 } from './digest.js';
export { formatDuration, parseDuration } from './duration.js';
export { normalizePlatform, ociArch, platformProblem } from './platform.js';
export { newId, randomToken } from './ids.js';
export { AGENT_NAME_PARAM_RE, BUILD_ID_RE, BUILD_ID_RULE, ENV_NAME_RE, NAME_RE, NAME_RULE } from './names.js';
export { MAX_NODE_SECRETS, MAX_SECRET_BYTES, MAX_SECRETS, SECRET_NAME_RE, SECRET_NAME_RULE } from './secret-names.js';
export { ARTIFACT_MEDIA_TYPE, INPUT_NAME_RE } from './spec/spec-fields.js';
export { parseImageRef } from './spec/image-ref.js';
export { BOM, type DockerfileInstruction, flagValue, fromParts, type PhysicalLine, splitDockerfile, trimLeft } from './dockerfile/parse.js';
export { type BaseImageRef, baseImageRefs, PLATFORM_ARGS, pullRefs } from './dockerfile/base-images.js';
export { MAX_PULL_HOSTS, pullHosts } from './dockerfile/pull-hosts.js';
export {
  AGENT_STATES,
  type AgentState,
  agentTransition,
  type AttemptState,
  attemptTransition,
  BUILD_STATES,
  type BuildState,
  canAgentTransition,
  deriveBuildState,
  emptyNodeCounts,
  isBuildTerminal,
  isNodeTerminal,
  NODE_STATES,
  type NodeState,
  nodeTransition,
  SLOT_HOLDING_ATTEMPT_STATES,
} from './states.js';
export {
  AGENT_CONTROL_ACTIONS,
  AGENT_CONTROL_ROUTES,
  type AgentControlAction,
  API_PREFIX,
  API_ROUTES,
  apiPath,
  encodePathSegment,
  withQuery,
} from './api-paths.js';
export {
  AGENT_SOCKET_PATH,
  type AssignCachePayload,
  type AssignPayload,
  type BaseImagePayload,
  CLOSE_CODES,
  type DockerInfoPayload,
  type FinishedCachePayload,
  type FinishedPayload,
  type Frame,
  type GpuInfoPayload,
  type GpuUsePayload,
  type HealthPayload,
  type HeartbeatPayload,
  type HelloPayload,
  Load,
  type LoadPayload,
  MAX_FRAME_BYTES,
  MAX_LOG_CHUNK_BYTES,
  type MessageType,
  type IndexEntryPayload,
  type OutputArtifactPayload,
  type Payload,
  type PushedImagePayload,
  type PlatformCapPayload,
  PROTOCOL_VERSION,
  PROTOCOL_VERSIONS,
  type ToAgentType,
  type ToCoordinatorType,
  type WelcomePayload,
} from './protocol/messages.js';
export { decodeFrame, encodeFrame } from './protocol/codec.js';
export { Backoff, jitter, sleep } from './backoff.js';
export { KILN_VERSION } from './version.js';
export { createLogger, type LogFormat, type LogLevel } from './logger.js';
export { configError, EX_CONFIG, readConfigFile } from './config-values.js';
export {
  fileSchema,
  type FlagSpec,
  kebab,
  LOG_SETTINGS,
  settingFlags,
  type SettingFlags,
  settingsHelpFooter,
  settingsMarkdown,
  SettingsReader,
  type SettingTable,
  type SettingType,
  settingTypes,
} from './settings.js';
export { packDir, type PackedDir } from './archive/pack-dir.js';
export { DEFAULT_EXTRACT_BUDGET, type ExtractOptions, extractTarContained, normalizeEntryPath, safeJoin } from './archive/safe-extract.js';
export { writeVerifiedFile } from './verified-file.js';
export { readBoundedText } from './bounded-body.js';
export { fsyncDir, writeFileDurable } from './durable-file.js';
export { fetchTrusting, isLoopbackHost, MAX_CA_FILE_BYTES, plaintextProblem, readCaFile, tlsRefusalCode, tlsRefusalMessage } from './tls-client.js';
export { acquireProcessLock, bootId, type LockIdentity, procStat, type StaleLock } from './process-lock.js';
export { systemTimers, type Timer, type Timers } from './timers.js';
export { corkForTurn } from './cork-per-turn.js';
export { LOG_TRACE_ON, startLogTrace, traceLog } from './log-trace.js';
export {
  NOOP_SPAN,
  otlpTracesUrl,
  parseTraceparent,
  PhaseSpans,
  type SpanAttributes,
  type SpanHandle,
  type SpanStart,
  spanIdOf,
  traceIdOf,
  traceparent,
  type Tracer,
  type TracingConfig,
  type TracingOptions,
  loadTracingConfig,
  tracingSettings,
} from './tracing.js';
export { openTracer } from './tracing-open.js';
export { coordinatorKey, indexOfCoordinator, MAX_COORDINATORS, splitCoordinatorList } from './coordinator-list.js';
export { leaderFromReason } from './api-cluster.js';
