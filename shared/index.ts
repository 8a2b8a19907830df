/**
 * The shared package: what coordinator, agent and CLI all use. Import from here, never
 * from files inside `shared/`, so the package's surface stays explicit.
 */
export * from './errors.js';
export * from './digest.js';
export * from './duration.js';
export * from './platform.js';
export * from './ids.js';
export * from './log-cursor.js';
export * from './log-events.js';
export * from './names.js';
export * from './states.js';
export * from './api-paths.js';
export * from './api.js';
export * from './api-fleet.js';
export * from './protocol/messages.js';
export * from './protocol/codec.js';
export * from './spec/build-spec.js';
export * from './spec/parse-spec.js';
export { forbiddenContent } from './spec/spec-fields.js';
export { submittedSpecJsonSchema } from './spec/spec-json-schema.js';
export * from './backoff.js';
export * from './version.js';
export * from './logger.js';
export * from './config-values.js';
export * from './settings.js';
export * from './archive/pack-dir.js';
export * from './archive/safe-extract.js';
export * from './file-writer.js';
export * from './verified-file.js';
export * from './process-lock.js';
export * from './typed-emitter.js';
export * from './timers.js';
