import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { UpstreamGrantError } from './types.ts';

/** Every upstream call ends within this (DESIGN.md: about 10 s), so a slow IdP never hangs a request. */
export const UPSTREAM_TIMEOUT_MS = 10_000;

/** Names Gatehouse on every upstream call (OwnerRez requires a User-Agent naming the app). */
export const USER_AGENT = 'Gatehouse/0.1.0 (MCP authorization server)';

/**
 * `fetch` with Gatehouse's User-Agent and a timeout. Network failures and timeouts become a transient
 * `UpstreamGrantError` whose message names only the upstream, never the URL's query or a token.
 */
export async function upstreamFetch(
  label: string,
  url: string | URL,
  init: RequestInit = {},
  timeoutMs = UPSTREAM_TIMEOUT_MS,
): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set('user-agent', USER_AGENT);
  try {
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    return await fetch(url, { ...init, headers, redirect: 'manual', signal });
  } catch (cause) {
    const timedOut = cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
    throw new UpstreamGrantError('transient', `${label} ${timedOut ? 'did not answer in time' : 'could not be reached'}`);
  }
}

/** Kept-alive sockets to the upstream APIs tools call: a new TLS handshake per tool call would cost more than the call. */
const apiAgents = { 'http:': new HttpAgent({ keepAlive: true }), 'https:': new HttpsAgent({ keepAlive: true }) };
/** An API answer larger than this is refused rather than held in memory (a calendar page is a few hundred KB at most). */
const MAX_API_ANSWER_BYTES = 16 * 1024 * 1024;

/**
 * An upstream API's answer, read whole: the part of a `Response` tools use. Building a real one (undici's
 * Headers, body stream and WebIDL checks) and reading it back cost about 70 µs of a tool call.
 */
export interface ApiAnswer {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  /** The body as text (UTF-8, a byte-order mark dropped, as `Response.text()`); empty when there is none. */
  text(): Promise<string>;
  /** The body parsed as JSON; rejects (SyntaxError) on anything else, an empty body included. */
  json(): Promise<unknown>;
}

class ReadAnswer implements ApiAnswer {
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  readonly status: number;
  readonly #body: Buffer;

  constructor(status: number, headers: IncomingHttpHeaders, body: Buffer) {
    this.status = status;
    this.ok = status >= 200 && status <= 299;
    this.#body = body;
    this.headers = {
      get: (name) => {
        const value = headers[name.toLowerCase()];
        return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
      },
    };
  }

  async text(): Promise<string> {
    const bom = this.#body[0] === 0xef && this.#body[1] === 0xbb && this.#body[2] === 0xbf;
    return this.#body.toString('utf8', bom ? 3 : 0);
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }
}

/**
 * A GET to an upstream API (the tools' calls) on Node's HTTP client with kept-alive sockets, answered
 * once the whole body is in: undici's `fetch` cost more CPU than the rest of a tool call (bench
 * profile). Same contract as `upstreamFetch`: Gatehouse's User-Agent, no redirects followed, and a
 * transient `UpstreamGrantError` naming only the upstream when it cannot be reached, answers too
 * much, or does not finish within the timeout.
 */
export function upstreamGet(label: string, url: URL, headers: Record<string, string>, timeoutMs = UPSTREAM_TIMEOUT_MS): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const agent = url.protocol === 'https:' ? apiAgents['https:'] : apiAgents['http:'];
    const request = send(url, { method: 'GET', headers: { ...headers, 'user-agent': USER_AGENT }, agent });
    let settled = false;
    const settle = (answer: ApiAnswer | undefined, reason?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (answer) return resolve(answer);
      reject(new UpstreamGrantError('transient', `${label} ${reason}`));
      request.destroy();
    };
    const timer = setTimeout(() => settle(undefined, 'did not answer in time'), timeoutMs);
    // No retry on a reset kept-alive socket: the upstream may have dropped this very request, and the
    // tool's answer then says to try again (Node drops idle sockets before a server's Keep-Alive timeout).
    request.on('error', () => settle(undefined, 'could not be reached'));
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_API_ANSWER_BYTES) return settle(undefined, 'sent an answer too large to read');
        chunks.push(chunk);
      });
      response.on('error', () => settle(undefined, 'could not be reached'));
      response.on('close', () => settle(undefined, 'could not be reached')); // a no-op after 'end' settled
      response.on('end', () => settle(new ReadAnswer(response.statusCode ?? 502, response.headers, Buffer.concat(chunks, size))));
    });
    request.end();
  });
}
