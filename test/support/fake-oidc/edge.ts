import { IncomingMessage, type ServerResponse } from 'node:http';
import type { FailureMode } from '../fake-oidc.ts';

// The fake's HTTP edge, in front of oidc-provider: request rewriting and the failures it injects.

/** oidc-provider derives its mount path from `originalUrl` minus `url`, as when mounted under Express. */
export function setUrl(req: IncomingMessage, mountPath: string, pathAndQuery: string): void {
  Object.assign(req, { url: pathAndQuery, originalUrl: `${mountPath}${pathAndQuery}` });
}

/** Answers (or refuses to answer) the way a broken upstream does; see `FailureMode`. */
export function fail(req: IncomingMessage, res: ServerResponse, mode: Exclude<FailureMode, 'slow'>): void {
  if (mode === 'down') req.socket.destroy();
  else if (mode === '500') answer(res, 500, 'text/html', '<!doctype html><title>Server Error</title><h1>500. That’s an error.</h1>');
  // Labelled JSON so a client that trusts the content type still has to survive the parse.
  else if (mode === 'garbage') answer(res, 200, 'application/json', '<html><body>Sign in to the Wi-Fi</body></html>');
  else answer(res, 400, 'application/json', oauthError('invalid_grant', 'The refresh token has been revoked or has expired.'));
}

/** A complete response the provider never sees: refusals and injected failures. */
export function answer(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' });
  res.end(body);
}

export const oauthError = (error: string, description: string): string => JSON.stringify({ error, error_description: description });

/** The whole request body (token and revocation forms are small). */
export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A request carrying `body` for oidc-provider, which reads bodies itself: the edge has already read
 * the original to count and fail calls. Same socket, method, URL and headers; `complete` is set so
 * that ending the copy does not count as an aborted request (which would destroy the socket).
 */
export function replayWithBody(req: IncomingMessage, body: Buffer): IncomingMessage {
  const copy = new IncomingMessage(req.socket);
  Object.assign(copy, {
    method: req.method,
    url: req.url,
    originalUrl: (req as IncomingMessage & { originalUrl?: string }).originalUrl,
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
    headers: { ...req.headers, 'content-length': String(body.length) },
    rawHeaders: req.rawHeaders,
    complete: true,
  });
  copy.push(body);
  copy.push(null);
  return copy;
}
