import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { OAuthError } from '../errors.ts';
import { hijackReply } from '../http.ts';
import type { AccountStore, LinkedAccount } from '../upstream/accounts.ts';
import type { Grants } from '../upstream/grants.ts';
import { USER_AGENT } from '../upstream/http.ts';
import { UpstreamGrantError, type UpstreamProvider } from '../upstream/types.ts';
import { withUpstreamTokens } from '../upstream/upstream-call.ts';
import { accountIdOf } from './context.ts';
import { toolCalled } from './json-rpc.ts';
import type { McpSessions } from './sessions.ts';
import type { ToolCallRecord } from './tool-runner.ts';

export interface BackendProxyOptions {
  /** The backend's MCP endpoint (MCP_BACKEND_URL). */
  url: string;
  /** The upstream whose access token the backend receives as its bearer (MCP_BACKEND_PROVIDER). */
  provider: string;
  accounts: Pick<AccountStore, 'findAccount'>;
  grants: Grants;
  upstreams: ReadonlyMap<string, Pick<UpstreamProvider, 'label'>>;
  /** The `WWW-Authenticate` of the 401 that sends the client to re-authorize. */
  challenge(): string;
  /** Default 10 s, as every upstream call (DESIGN.md §3). */
  connectTimeoutMs?: number;
  /** Told of each forwarded `tools/call` once the backend answered or failed (the audit trail). */
  onToolCall?(record: ToolCallRecord): void;
  /** Until the backend's status line, except on GET (an idle SSE stream may send nothing); default 60 s, the SDK client's own request timeout. */
  responseTimeoutMs?: number;
  /** Session bindings idle this long are forgotten (the client re-initializes); default 30 min, as local sessions. */
  idleMs?: number;
  maxSessions?: number;
  maxSessionsPerAccount?: number;
}

/** Why the backend gave no answer: `unreachable` (refused, reset, DNS) → 502, `timeout` → 504. The message names no URL or token. */
export class BackendError extends Error {
  readonly kind: 'unreachable' | 'timeout';
  constructor(kind: 'unreachable' | 'timeout', message: string) {
    super(message);
    this.name = 'BackendError';
    this.kind = kind;
  }
}

export interface BackendRequest {
  method: string;
  headers: OutgoingHttpHeaders;
  body?: Buffer | undefined;
  /** Aborting destroys the request and, once it answered, its response. */
  signal?: AbortSignal | undefined;
}

/**
 * Sends one request to the backend and resolves with its response as soon as the status line is in;
 * the body is left to stream. Fails with `BackendError`: nothing waits past `connectMs` for a socket
 * or past `responseMs` (0: no limit) for an answer. A GET or DELETE that met a kept-alive socket the
 * backend had just closed is retried once on a new one, as Node's documentation advises.
 */
export function requestBackend(
  url: URL,
  init: BackendRequest,
  limits: { connectMs: number; responseMs: number },
  agent?: HttpAgent,
  retried = false,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send(url, { method: init.method, headers: init.headers, agent, signal: init.signal });
    const failAfter = (ms: number, message: string) => setTimeout(() => request.destroy(new BackendError('timeout', message)), ms);
    const answerTimer = limits.responseMs > 0 ? failAfter(limits.responseMs, 'the backend MCP server did not answer in time') : undefined;
    let connectTimer: NodeJS.Timeout | undefined;
    const clearTimers = () => {
      clearTimeout(answerTimer);
      clearTimeout(connectTimer);
    };
    request.once('socket', (socket) => {
      if (!socket.connecting) return;
      connectTimer = failAfter(limits.connectMs, 'the backend MCP server did not accept the connection in time');
      socket.once('connect', () => clearTimeout(connectTimer));
    });
    request.once('response', (response) => {
      clearTimers();
      response.on('error', () => {}); // the reader (pipeline) sees it; unheard, it would crash the process
      resolve(response);
    });
    // `on`, not `once`: a socket can fail twice, and a second unheard 'error' would crash the process.
    request.on('error', (error: NodeJS.ErrnoException) => {
      clearTimers();
      if (error instanceof BackendError || init.signal?.aborted) return reject(error);
      // Never a POST: the backend may have run the tool call before the reset.
      if (request.reusedSocket && error.code === 'ECONNRESET' && init.method !== 'POST' && !retried)
        return resolve(requestBackend(url, init, limits, agent, true));
      reject(new BackendError('unreachable', 'the backend MCP server could not be reached'));
    });
    request.end(init.body);
  });
}

/** What the client's request may tell the backend. Everything else stays: Authorization, Cookie, Origin, hop-by-hop, X-Forwarded-*. */
const REQUEST_HEADERS = ['accept', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id'];
/**
 * What the backend's answer may tell the client. Its `WWW-Authenticate` names the backend's own
 * authorization server, which the client never talks to, and its cookies are not Gatehouse's.
 */
const RESPONSE_HEADERS = [
  'content-type',
  'content-length',
  'content-encoding',
  'cache-control',
  'mcp-session-id',
  'mcp-protocol-version',
  'retry-after',
  'allow',
];

function pickHeaders(headers: IncomingHttpHeaders, names: readonly string[]): OutgoingHttpHeaders {
  const picked: OutgoingHttpHeaders = {};
  for (const name of names) if (headers[name] !== undefined) picked[name] = headers[name];
  return picked;
}

/** The request bodies proxy mode forwards byte for byte, beside the parsed copy the gate reads. */
const rawBodies = new WeakMap<FastifyRequest, Buffer>();

/** Keeps each JSON body as received (for forwarding) while still parsing it as Fastify does (same limits, same errors). */
export function keepRawJsonBodies(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    rawBodies.set(request, body as Buffer);
    parseJson(request, (body as Buffer).toString('utf8'), done);
  });
}

/**
 * Streams the backend's answer to the client as it arrives, with backpressure. Either side ending early
 * destroys the other: a client that leaves aborts the backend stream and vice versa. Each chunk is
 * written corked until the next tick, so a last chunk and the end that arrive together leave in one
 * write (a socket write costs more than anything else a proxied call does). Not stream.pipeline: it
 * aborts an AbortController of its own after every response, and the DOMException that builds cost
 * more than the piping (bench profile).
 */
function forward(response: IncomingMessage, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    res.once('close', () => {
      if (!response.complete) response.destroy();
      resolve();
    });
    response.once('close', () => {
      if (!response.complete) res.destroy();
    });
    res.on('drain', () => response.resume());
    response.on('data', (chunk: Buffer) => {
      if (!res.writableCorked) {
        res.cork();
        process.nextTick(() => res.uncork());
      }
      if (!res.write(chunk)) response.pause();
    });
    response.once('end', () => res.end());
  });
}

interface Binding {
  accountId: string;
  clientId: string;
  /** The upstream account whose token this session's requests carry, chosen when it opened. */
  connectionId: string;
  lastSeen: number;
}

const notFound = { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null };

/**
 * Proxy mode (MCP_BACKEND_URL): every /mcp request that passed the gate goes to the backend MCP server
 * with the caller's fresh upstream access token as its bearer, instead of Gatehouse's own tools. The
 * token is the one of the caller's oldest live account at `provider`. Both directions stream; only
 * the request body is held, so a backend 401 can be answered with one refresh and one retry (then the
 * grant is retired and the client re-authorizes). Backend session ids are bound to the user and client
 * that opened them, as local sessions are, so a leaked id is useless to anyone else.
 */
export function createBackendProxy(options: BackendProxyOptions): McpSessions {
  const { accounts, grants, provider, challenge } = options;
  const target = new URL(options.url);
  const label = options.upstreams.get(provider)?.label ?? provider;
  const agent = target.protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  const connectMs = options.connectTimeoutMs ?? 10_000;
  const responseMs = options.responseTimeoutMs ?? 60_000;
  const idleMs = options.idleMs ?? 30 * 60_000;
  const maxSessions = options.maxSessions ?? 10_000;
  const maxPerAccount = options.maxSessionsPerAccount ?? 32;
  const bindings = new Map<string, Binding>();

  const sweep = setInterval(() => {
    const cutoff = Date.now() - idleMs;
    for (const [id, binding] of bindings) if (binding.lastSeen < cutoff) bindings.delete(id);
  }, 60_000);
  sweep.unref();

  /** One token holder cannot crowd out everyone's bindings: its oldest gives way (the backend expires the session itself). */
  const bind = (sessionId: string, binding: Omit<Binding, 'lastSeen'>): void => {
    const own = [...bindings].filter(([, other]) => other.accountId === binding.accountId);
    if (own.length >= maxPerAccount) bindings.delete(own.reduce((a, b) => (a[1].lastSeen <= b[1].lastSeen ? a : b))[0]);
    bindings.set(sessionId, { ...binding, lastSeen: Date.now() });
  };

  const connectionOf = (accountId: string): LinkedAccount => {
    const mine = accounts.findAccount(accountId)?.upstream.filter((connection) => connection.provider === provider) ?? [];
    const connection = mine.find((c) => c.status === 'ok') ?? mine[0];
    // 403, not 401: our token is fine, and re-authorizing would pass consent silently back to the same upstream account.
    if (!connection)
      throw new OAuthError(
        'access_denied',
        `this MCP server works on a ${label} account and none is connected to your Gatehouse account: sign in to Gatehouse with ${label}`,
        403,
      );
    return connection;
  };

  const failure = (error: unknown): unknown => {
    if (error instanceof BackendError)
      return new OAuthError('temporarily_unavailable', error.message, error.kind === 'timeout' ? 504 : 502);
    if (!(error instanceof UpstreamGrantError)) return error;
    if (error.kind === 'terminal') return new OAuthError('invalid_token', error.message, 401, { 'www-authenticate': challenge() });
    return new OAuthError('temporarily_unavailable', error.message, 503, { 'retry-after': String(error.retryAfter) });
  };

  return {
    async handle(request, reply, auth: AuthInfo) {
      const accountId = accountIdOf(auth);
      const sessionId = request.headers['mcp-session-id'];
      let connectionId: string;
      if (typeof sessionId === 'string') {
        const binding = bindings.get(sessionId);
        // Awaited: a reply merely sent may still sit in an onSend hook, and an async handler resolving meanwhile would send twice.
        if (binding?.accountId !== accountId || binding.clientId !== auth.clientId) return await reply.code(404).send(notFound);
        binding.lastSeen = Date.now();
        // The session keeps the upstream account it opened with (no account read per request); if that
        // grant dies or is disconnected, its token load fails terminally and the client re-authorizes.
        connectionId = binding.connectionId;
      } else {
        if (request.method === 'POST' && isInitializeRequest(request.body) && bindings.size >= maxSessions)
          throw new OAuthError('temporarily_unavailable', 'too many open MCP sessions, retry later', 503, { 'retry-after': '30' });
        connectionId = connectionOf(accountId).id;
      }

      // The client left (its 'close' before the response finished): the backend request goes too.
      const gone = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      const body = rawBodies.get(request);
      const headers = pickHeaders(request.headers, REQUEST_HEADERS);
      headers['user-agent'] = USER_AGENT; // the backend's client is Gatehouse, as for every upstream call
      if (body) headers['content-length'] = body.length;
      const limits = { connectMs, responseMs: request.method === 'GET' ? 0 : responseMs };
      const tool = toolCalled(request.body);
      const started = performance.now();
      const audit = (outcome: ToolCallRecord['outcome'], upstreamStatus: number | undefined) => {
        if (tool === undefined) return;
        const durationMs = Math.round(performance.now() - started);
        options.onToolCall?.({ tool, accountId, clientId: auth.clientId, outcome, upstreamStatus, durationMs });
      };

      let response: IncomingMessage;
      try {
        response = await withUpstreamTokens(grants, accountId, connectionId, async (tokens) => {
          const init = {
            method: request.method,
            headers: { ...headers, authorization: `Bearer ${tokens.accessToken}` },
            body,
            signal: gone.signal,
          };
          const answer = await requestBackend(target, init, limits, agent);
          if (answer.statusCode !== 401) return answer;
          answer.resume();
          throw new UpstreamGrantError(
            'terminal',
            `the backend MCP server refused the ${label} account's token; reconnect your ${label} account`,
          );
        });
      } catch (error) {
        audit(error instanceof UpstreamGrantError && error.kind === 'terminal' ? 'reconnect' : 'upstream_unavailable', undefined);
        if (gone.signal.aborted) return void reply.hijack();
        if (error instanceof BackendError) request.log.warn({ reason: error.message }, 'backend MCP server failed');
        throw failure(error);
      }

      const status = response.statusCode ?? 502;
      audit(status < 400 ? 'ok' : 'tool_error', status);
      const opened = response.headers['mcp-session-id'];
      if (typeof sessionId === 'string') {
        if (status === 404 || (request.method === 'DELETE' && status < 300)) bindings.delete(sessionId);
      } else if (typeof opened === 'string' && status < 300) {
        bind(opened, { accountId, clientId: auth.clientId, connectionId });
      }
      const res = hijackReply(reply);
      res.writeHead(status, pickHeaders(response.headers, RESPONSE_HEADERS));
      // A GET stream may stay quiet for long: the client learns it is open now. A POST's headers go with its answer.
      if (request.method === 'GET') res.flushHeaders();
      await forward(response, res);
    },
    async closeAll() {
      clearInterval(sweep);
      agent.destroy(); // ends every open backend stream, and with it the client's
    },
  };
}
