/**
 * Protocol errors of the sans-IO HTTP/1.1 layer.
 *
 * Blame decides the type, as in h11: a {@linkcode RemoteProtocolError} means
 * the peer sent bytes that break HTTP/1.1 (the server answers it with
 * {@linkcode ProtocolError.status} and closes the connection); a
 * {@linkcode LocalProtocolError} means our side (the application) tried to
 * send something HTTP/1.1 cannot carry. Any other exception type escaping this
 * layer is a bug.
 *
 * @module
 */

/** An HTTP/1.1 protocol violation, carrying the status code that answers it. */
export abstract class ProtocolError extends Error {
  /** The HTTP status code that best describes the violation (400, 413, 414, ...). */
  readonly status: number;

  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

/** The peer broke the protocol: answer with {@linkcode ProtocolError.status}, then close. */
export class RemoteProtocolError extends ProtocolError {
  override readonly name = "RemoteProtocolError";

  constructor(message: string, status = 400) {
    super(message, status);
  }
}

/** Our side tried to send something that HTTP/1.1 cannot carry. */
export class LocalProtocolError extends ProtocolError {
  override readonly name = "LocalProtocolError";

  constructor(message: string, status = 500) {
    super(message, status);
  }
}
