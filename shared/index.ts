/**
 * The shared package: what coordinator, agent and CLI all use. Import from here, never
 * from files inside `shared/`. Every name is listed: the package's surface is what the other
 * folders use (a name no one imports is not exported here; add it when a caller needs it).
 */
export { coerceError, errnoCode, type ErrorCode, type FieldError, isKilnError, KilnError } from './errors.js';
export {
  type Digest,
  DIGEST_RE,
  digestHex,
  hasherDigest,
  HEX_RE,
  newHasher,
  parseDigest,
  sha256,
} from './digest.js';
export { formatDuration, parseDuration } from './duration.js';
export { normalizePlatform, ociArch, platformProblem } from './platform.js';
export { newId, randomToken } from './ids.js';
export {
  CURSOR_RE,
  formatCursor,
  formatOffsetId,
  MAX_CURSOR_CHARS,
  parseCursor,
  type ParsedCursor,
  parseOffsetId,
} from './log-cursor.js';
export {
  EndEventData,
  type FollowEvent,
  LogCursorId,
  LogEventData,
  LogOffsetId,
  parseLogStreamEvent,
  sseFieldsOf,
  StatusEventData,
} from './log-events.js';
export { AGENT_NAME_PARAM_RE, BUILD_ID_RE, BUILD_ID_RULE, ENV_NAME_RE, NAME_RE, NAME_RULE } from './names.js';
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
  AgentControlBody,
  AgentPage,
  AgentView,
  type AgentViewT,
  ArtifactPage,
  type ArtifactViewT,
  type AttemptViewT,
  BuildPage,
  type BuildSummaryT,
  BuildView,
  type BuildViewT,
  CreatedBuild,
  MAX_FIND_MISSING,
  type NodeViewT,
  Problem,
  type ProblemT,
} from './api.js';
export {
  DeadLetterList,
  DeadLetterView,
  type DeadLetterViewT,
  ErrorReport,
  type ErrorReportNodeT,
  type ErrorReportT,
  PoolList,
  PoolView,
  type PoolViewT,
} from './api-fleet.js';
export {
  AGENT_SOCKET_PATH,
  type AssignPayload,
  type BaseImagePayload,
  CLOSE_CODES,
  type DockerInfoPayload,
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
  type OutputArtifactPayload,
  type Payload,
  type PlatformCapPayload,
  PROTOCOL_VERSION,
  PROTOCOL_VERSIONS,
  type ToAgentType,
  type ToCoordinatorType,
  type WelcomePayload,
} from './protocol/messages.js';
export { decodeFrame, encodeFrame } from './protocol/codec.js';
export {
  ARTIFACT_MEDIA_TYPE,
  findCycle,
  type GpuRequirement,
  INPUT_NAME_RE,
  NODE_NAME_RE,
  type ResolvedNode,
  type ResolvedSpec,
  type ValidateOptions,
  validateSpec,
} from './spec/build-spec.js';
export { decodeSpecBytes, firstInvalidUtf8, MAX_SPEC_BYTES, parseSpecText } from './spec/parse-spec.js';
export { forbiddenContent } from './spec/spec-fields.js';
export { submittedSpecJsonSchema } from './spec/spec-json-schema.js';
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
  settingTypes,
} from './settings.js';
export { packDir, type PackedDir } from './archive/pack-dir.js';
export {
  DEFAULT_EXTRACT_BUDGET,
  type ExtractOptions,
  extractTarContained,
  normalizeEntryPath,
  safeJoin,
} from './archive/safe-extract.js';
export { writeVerifiedFile } from './verified-file.js';
export { acquireProcessLock, bootId, type LockIdentity, procStat, type StaleLock } from './process-lock.js';
export { type Listener, TypedEmitter } from './typed-emitter.js';
export { systemTimers, type Timer, type Timers } from './timers.js';
