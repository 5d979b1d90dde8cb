// Errors: every failed library call becomes a TabagentError subclass carrying the
// status code, its name, and the library's message (ta_last_error of the thread the
// call ran on).

export const STATUS = Object.freeze({
  OK: 0,
  NULL_ARG: 1,
  INVALID_ARG: 2,
  IO: 3,
  NOT_FOUND: 4,
  BAD_MODEL: 5,
  NETWORK: 6,
  CHECKSUM: 7,
  CANCELLED: 8,
  CONTEXT_FULL: 9,
  BUSY: 10,
  UNSUPPORTED: 11,
  OUT_OF_MEMORY: 12,
  PANIC: 13,
  BUFFER_TOO_SMALL: 14,
  UNAUTHORIZED: 15,
  OFFLINE: 16,
  BACKEND: 17,
});

const NAMES = Object.fromEntries(Object.entries(STATUS).map(([k, v]) => [v, k]));

export class TabagentError extends Error {
  /**
   * @param {number} status a ta_status code
   * @param {string} message the library's message
   */
  constructor(status, message, options) {
    super(message, options);
    this.name = new.target.name;
    this.status = status;
    this.statusName = NAMES[status] ?? String(status);
  }
}

export class NullArgError extends TabagentError {}
export class InvalidArgumentError extends TabagentError {}
export class IoError extends TabagentError {}
export class NotFoundError extends TabagentError {}
export class BadModelError extends TabagentError {}
export class NetworkError extends TabagentError {}
export class ChecksumError extends TabagentError {}
/** The work was stopped (a callback said so, or a cancel). `result` holds what a
 * cancelled generation did so far (its `text` included), when there is one. */
export class CancelledError extends TabagentError {}
export class ContextFullError extends TabagentError {}
export class BusyError extends TabagentError {}
export class UnsupportedError extends TabagentError {}
export class OutOfMemoryError extends TabagentError {}
export class PanicError extends TabagentError {}
export class BufferTooSmallError extends TabagentError {}
export class UnauthorizedError extends TabagentError {}
export class OfflineError extends TabagentError {}
export class BackendError extends TabagentError {}

/** The call was stopped by an AbortSignal: a CancelledError whose `name` is
 * "AbortError" and `code` "ABORT_ERR" (as Node's own aborted calls), `cause` the
 * signal's reason and `result` the partial result. */
export class AbortError extends CancelledError {
  constructor(message, options) {
    super(STATUS.CANCELLED, message, options);
    this.name = 'AbortError';
    this.code = 'ABORT_ERR';
  }
}

const CLASSES = {
  1: NullArgError,
  2: InvalidArgumentError,
  3: IoError,
  4: NotFoundError,
  5: BadModelError,
  6: NetworkError,
  7: ChecksumError,
  8: CancelledError,
  9: ContextFullError,
  10: BusyError,
  11: UnsupportedError,
  12: OutOfMemoryError,
  13: PanicError,
  14: BufferTooSmallError,
  15: UnauthorizedError,
  16: OfflineError,
  17: BackendError,
};

/** The error for `status` with `message` (falls back to the status text). */
export function makeError(status, message, fallback) {
  const Cls = CLASSES[status] ?? TabagentError;
  return new Cls(status, message || fallback || NAMES[status] || `status ${status}`);
}
