/**
 * The one error type our own code throws for protocol failures. One handler (see `sendOAuthError`)
 * turns it into an RFC 6749 §5.2 body; anything that is not an OAuthError is an opaque 500.
 */
export class OAuthError extends Error {
  readonly code: string;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: string, description: string, status = 400, headers: Record<string, string> = {}) {
    // A protocol error is an answer, not a bug: capturing a stack would cost more than the rest of a 401.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(description);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'OAuthError';
    this.code = code;
    this.status = status;
    this.headers = headers;
  }

  /** The RFC 6749 §5.2 error body. The description never carries a token or secret. */
  toJSON(): { error: string; error_description: string } {
    return { error: this.code, error_description: this.message };
  }
}

export const isOAuthError = (value: unknown): value is OAuthError => value instanceof OAuthError;
