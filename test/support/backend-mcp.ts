import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

/** One HTTP request as the backend received it. */
export interface BackendSeen {
  method: string;
  headers: IncomingHttpHeaders;
  /** The bearer token, `undefined` if the request carried none. */
  bearer: string | undefined;
}

/**
 * How the next POST fails (GETs are left alone: SDK clients open theirs in the background at any
 * time): `unauthorized` is a 401 with the backend's own bearer challenge (its upstream refused the
 * token); `drop` destroys the socket unanswered; `hang` never answers.
 */
export type BackendFailure = 'unauthorized' | 'drop' | 'hang';

export interface BackendMcp {
  /** The MCP endpoint: `http://127.0.0.1:<port>/mcp`. */
  url: string;
  /** Every request, in arrival order (failed ones too). */
  readonly seen: BackendSeen[];
  failNext(mode: BackendFailure, times?: number): void;
  /** Session ids the backend has open now. */
  sessionIds(): string[];
  /** GET (SSE) requests whose connection is still open. */
  openStreams(): number;
  /** Sends `notifications/tools/list_changed` to a session; it travels on the session's GET stream. */
  notifyToolListChanged(sessionId: string): Promise<void>;
  /** Ends every open GET stream from the backend's side. */
  endStreams(): void;
  /** Lets a running `wait_with_progress` call finish. */
  release(): void;
  close(): Promise<void>;
}

const WWW_AUTHENTICATE = 'Bearer error="invalid_token", resource_metadata="http://backend.invalid/.well-known/oauth-protected-resource"';

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

/**
 * A backend MCP server of the kind proxy mode fronts: it takes a per-request upstream bearer token
 * (as multi-tenant servers over Google Calendar do), built on the real SDK (McpServer + stateful
 * StreamableHTTPServerTransport, SSE answers) on 127.0.0.1. It records every request's headers.
 * Tools: `echo_bearer` returns the bearer its request carried; `wait_with_progress` sends a progress
 * notification on its POST's SSE stream and finishes only once `release()` is called (or after 10 s).
 */
export async function startBackendMcp(): Promise<BackendMcp> {
  const seen: BackendSeen[] = [];
  const failures: BackendFailure[] = [];
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; server: McpServer }>();
  const streams = new Set<ServerResponse>();
  const hanging = new Set<ServerResponse>();
  let releases: (() => void)[] = [];

  const buildServer = (): McpServer => {
    const server = new McpServer({ name: 'backend-mcp', version: '1.0.0' });
    server.registerTool('echo_bearer', { description: 'Returns the bearer token this request carried.' }, async (extra) => ({
      content: [{ type: 'text', text: String(extra.authInfo?.token) }],
    }));
    server.registerTool('wait_with_progress', { description: 'Reports progress, then waits to be released.' }, async (extra) => {
      const progressToken = extra._meta?.progressToken;
      if (progressToken !== undefined)
        await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: 1, total: 2 } });
      await new Promise<void>((resolve) => {
        releases.push(resolve);
        setTimeout(resolve, 10_000).unref();
      });
      return { content: [{ type: 'text', text: 'released' }] };
    });
    return server;
  };

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const header = request.headers.authorization;
    const bearer = header?.startsWith('Bearer ') ? header.slice(7) : undefined;
    seen.push({ method: request.method ?? '', headers: request.headers, bearer });
    const failure = request.method === 'POST' ? failures.shift() : undefined;
    if (failure === 'drop') return void request.socket.destroy();
    if (failure === 'hang') return void hanging.add(response);
    if (failure === 'unauthorized' || !bearer) {
      response.writeHead(401, { 'www-authenticate': WWW_AUTHENTICATE, 'content-type': 'application/json' });
      return void response.end(JSON.stringify({ error: 'invalid_token' }));
    }
    const body = request.method === 'POST' ? await readJson(request) : undefined;
    (request as IncomingMessage & { auth?: AuthInfo }).auth = { token: bearer, clientId: 'gatehouse', scopes: [] };
    const sessionId = request.headers['mcp-session-id'];
    let session = typeof sessionId === 'string' ? sessions.get(sessionId) : undefined;
    if (!session) {
      if (typeof sessionId === 'string' || !isInitializeRequest(body)) {
        response.writeHead(typeof sessionId === 'string' ? 404 : 400, { 'content-type': 'application/json' });
        return void response.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }));
      }
      const server = buildServer();
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void sessions.set(id, { transport, server }),
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await server.connect(transport);
      session = { transport, server };
    }
    if (request.method === 'GET') {
      streams.add(response);
      response.once('close', () => streams.delete(response));
    }
    await session.transport.handleRequest(request, response, body);
  };

  const http = createServer((request, response) => {
    handle(request, response).catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/mcp`,
    seen,
    failNext(mode, times = 1) {
      for (let i = 0; i < times; i++) failures.push(mode);
    },
    sessionIds: () => [...sessions.keys()],
    openStreams: () => streams.size,
    async notifyToolListChanged(sessionId) {
      const session = sessions.get(sessionId);
      if (!session) throw new Error(`no backend session ${sessionId}`);
      session.server.sendToolListChanged();
    },
    endStreams() {
      for (const session of sessions.values()) session.transport.closeStandaloneSSEStream();
    },
    release() {
      for (const resolve of releases) resolve();
      releases = [];
    },
    async close() {
      for (const response of hanging) response.destroy();
      await Promise.all([...sessions.values()].map((session) => session.transport.close()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
