import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { MAX_BATCH_SIZE } from '@modelcontextprotocol/sdk/server/requestBody.js';
import { DEFAULT_SSE_KEEP_ALIVE_MS } from '@modelcontextprotocol/sdk/server/sseKeepAlive.js';
import { isJsonContentType } from '@modelcontextprotocol/sdk/shared/mediaType.js';
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js';
import { type JSONRPCMessage, type JSONRPCRequest, type RequestId, SUPPORTED_PROTOCOL_VERSIONS } from '@modelcontextprotocol/sdk/types.js';
import { jsonRpcKind } from './json-rpc.ts';

/** A POST whose JSON-RPC requests are being answered: the response is written once all of them are. */
interface PendingPost {
  res: ServerResponse;
  authInfo: AuthInfo;
  ids: RequestId[];
  answers: Map<RequestId, JSONRPCMessage>;
}

export interface SessionTransportOptions {
  sessionId: string;
  /** Called once the session's `initialize` request was accepted: from then on the id routes requests here. */
  onInitialized(): void;
  /** A status other than 200 for a POST's answer, decided once its calls ran (see upstream-outcome.ts). */
  answerStatus?(authInfo: AuthInfo): { status: number; headers: Record<string, string> } | undefined;
  keepAliveMs?: number;
}

/**
 * The MCP Streamable HTTP transport (spec 2025-06-18 and later, "Streamable HTTP") for one stateful
 * session, written straight onto Node's request and response. It answers every POST with plain JSON
 * (the SDK transport's `enableJsonResponse` mode) and carries server-initiated messages on the GET
 * stream. The SDK's `StreamableHTTPServerTransport` serves the same protocol through a Node-to-Web
 * Request/Response bridge that cost more than the whole tool call it carried (the benchmark's profile:
 * the bridge and Web transport took 100 µs of a 300 µs `tools/call`); the rules below are the SDK's,
 * status codes and JSON-RPC error codes included, so an SDK client sees no difference.
 *
 * Not carried over: resumability (no event store was configured) and notifications tied to a request,
 * which JSON mode cannot deliver (the SDK drops them too).
 */
export class SessionTransport implements Transport {
  readonly sessionId: string;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: Transport['onmessage'];

  readonly #options: SessionTransportOptions;
  readonly #pending = new Map<RequestId, PendingPost>();
  #stream: { res: ServerResponse; keepAlive: NodeJS.Timeout } | undefined;
  #initialized = false;
  #closed = false;

  constructor(options: SessionTransportOptions) {
    this.sessionId = options.sessionId;
    this.#options = options;
  }

  async start(): Promise<void> {}

  /** Serves one HTTP request of this session; `body` is the parsed JSON body of a POST. */
  async handleRequest(req: IncomingMessage, res: ServerResponse, body: unknown, authInfo: AuthInfo): Promise<void> {
    if (this.#closed) return reject(res, 404, -32001, 'Session not found');
    if (req.method === 'POST') return this.#post(req, res, body, authInfo);
    if (req.method === 'GET') return this.#openStream(req, res);
    if (req.method === 'DELETE') {
      if (!this.#sessionMatches(req, res)) return;
      res.writeHead(200, { 'content-length': 0 }).end();
      return this.close();
    }
    res.writeHead(405, { allow: 'GET, POST, DELETE', 'content-type': 'application/json' });
    res.end(errorBody(-32000, 'Method not allowed.'));
  }

  #post(req: IncomingMessage, res: ServerResponse, body: unknown, authInfo: AuthInfo): undefined {
    // Transport spec: the client MUST accept both; Accept is a list, so a substring check is what the SDK does too.
    const accept = req.headers.accept;
    if (!accept?.includes('application/json') || !accept.includes('text/event-stream'))
      return reject(res, 406, -32000, 'Not Acceptable: Client must accept both application/json and text/event-stream');
    if (!isJsonContentType(req.headers['content-type'] ?? null))
      return reject(res, 415, -32000, 'Unsupported Media Type: Content-Type must be application/json');
    const batch: unknown[] = Array.isArray(body) ? body : [body];
    if (batch.length > MAX_BATCH_SIZE) return reject(res, 400, -32600, `Invalid Request: Batch must not exceed ${MAX_BATCH_SIZE} messages`);
    const kinds = batch.map(jsonRpcKind);
    if (batch.length === 0 || kinds.includes(undefined)) return reject(res, 400, -32700, 'Parse error: Invalid JSON-RPC message');
    const messages = batch as JSONRPCMessage[];
    const requests = messages.filter((_, i) => kinds[i] === 'request') as JSONRPCRequest[];

    const initializing = requests.some((request) => request.method === 'initialize');
    if (initializing) {
      if (this.#initialized) return reject(res, 400, -32600, 'Invalid Request: Server already initialized');
      if (messages.length > 1) return reject(res, 400, -32600, 'Invalid Request: Only one initialization request is allowed');
      this.#initialized = true;
      this.#options.onInitialized();
    } else if (!this.#sessionMatches(req, res)) {
      return;
    }

    const ids = requests.map((request) => request.id);
    if (new Set(ids).size !== ids.length || ids.some((id) => this.#pending.has(id)))
      return reject(res, 400, -32600, 'Invalid Request: a request with this id is already in progress');
    // RequestInfo.url is left out: no Gatehouse tool reads it, and building a URL per call is not free.
    const extra = { authInfo, requestInfo: { headers: req.headers } };
    if (ids.length === 0) {
      // Only notifications and responses: accepted, nothing to answer.
      res.writeHead(202, { 'content-length': 0 }).end();
      for (const message of messages) this.onmessage?.(message, extra);
      return;
    }
    const post: PendingPost = { res, authInfo, ids, answers: new Map() };
    for (const id of ids) this.#pending.set(id, post);
    // A client that hangs up leaves nothing behind: its answers are dropped when they come.
    res.once('close', () => {
      for (const id of ids) if (this.#pending.get(id) === post) this.#pending.delete(id);
    });
    for (const message of messages) this.onmessage?.(message, extra);
  }

  /** The GET stream: server-initiated requests and notifications, one stream per session. */
  #openStream(req: IncomingMessage, res: ServerResponse): undefined {
    if (!req.headers.accept?.includes('text/event-stream'))
      return reject(res, 406, -32000, 'Not Acceptable: Client must accept text/event-stream');
    if (!this.#sessionMatches(req, res)) return;
    if (this.#stream) return reject(res, 409, -32000, 'Conflict: Only one SSE stream is allowed per session');
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'mcp-session-id': this.sessionId,
    });
    res.flushHeaders();
    // A comment frame keeps proxies and idle timeouts from closing a quiet stream.
    const keepAlive = setInterval(() => writeEvent(res, ': keepalive\n\n'), this.#options.keepAliveMs ?? DEFAULT_SSE_KEEP_ALIVE_MS);
    keepAlive.unref();
    const stream = { res, keepAlive };
    this.#stream = stream;
    res.once('close', () => {
      clearInterval(keepAlive);
      if (this.#stream === stream) this.#stream = undefined;
    });
  }

  /** Every request after `initialize` names this session and a protocol version the SDK supports (or none). */
  #sessionMatches(req: IncomingMessage, res: ServerResponse): boolean {
    const version = req.headers['mcp-protocol-version'];
    if (!this.#initialized) reject(res, 400, -32000, 'Bad Request: Server not initialized');
    else if (!req.headers['mcp-session-id']) reject(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
    else if (req.headers['mcp-session-id'] !== this.sessionId) reject(res, 404, -32001, 'Session not found');
    else if (version !== undefined && !SUPPORTED_PROTOCOL_VERSIONS.includes(String(version)))
      reject(
        res,
        400,
        -32000,
        `Bad Request: Unsupported protocol version: ${String(version).slice(0, 32)} (supported versions: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')})`,
      );
    else return true;
    return false;
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if ('result' in message || 'error' in message) {
      const id = message.id as RequestId;
      const post = this.#pending.get(id);
      if (!post) {
        // The client hung up, or the session closed: there is nobody to answer.
        if (this.#closed) return;
        throw new Error(`No connection established for request ID: ${String(id)}`);
      }
      this.#pending.delete(id);
      post.answers.set(id, message);
      if (post.answers.size === post.ids.length) this.#answer(post);
      return;
    }
    // Notifications and requests about a running request cannot ride a JSON answer (SDK JSON mode drops them too).
    if (options?.relatedRequestId !== undefined) return;
    if (this.#stream) writeEvent(this.#stream.res, `event: message\ndata: ${JSON.stringify(message)}\n\n`);
  }

  #answer({ res, authInfo, ids, answers }: PendingPost): void {
    if (res.writableEnded || res.destroyed) return;
    const body = ids.length === 1 ? JSON.stringify(answers.get(ids[0] as RequestId)) : JSON.stringify(ids.map((id) => answers.get(id)));
    const outcome = this.#options.answerStatus?.(authInfo);
    // With the length given, the answer goes out in one piece, not chunked (writeHead fixes the headers before end sees the body).
    res.writeHead(outcome?.status ?? 200, {
      ...outcome?.headers,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'mcp-session-id': this.sessionId,
    });
    res.end(body);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#stream) {
      clearInterval(this.#stream.keepAlive);
      this.#stream.res.end();
      this.#stream = undefined;
    }
    // Requests still running get the answer a request to a closed session gets.
    for (const post of new Set(this.#pending.values())) if (!post.res.headersSent) reject(post.res, 404, -32001, 'Session not found');
    this.#pending.clear();
    this.onclose?.();
  }
}

/** A stream the client just left is dropped at its 'close'; until then nothing is written to it. */
function writeEvent(res: ServerResponse, text: string): void {
  if (!res.writableEnded && !res.destroyed) res.write(text);
}

const errorBody = (code: number, message: string): string => JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null });

function reject(res: ServerResponse, status: number, code: number, message: string): undefined {
  const body = errorBody(code, message);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
