import { randomUUID } from 'node:crypto';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OAuthError } from '../errors.ts';
import { hijackReply } from '../http.ts';
import { type BearerOptions, verifyBearer } from './bearer.ts';

export interface McpRoutesOptions {
  bearer: BearerOptions;
  issuer: string;
  scopesSupported: readonly string[];
  /** Whether a browser `Origin` may call /mcp (see `origin.ts`). */
  isAllowedOrigin(origin: string): boolean;
  createServer(): McpServer;
  /** Sessions idle for this long are closed (the client re-initializes). */
  sessionIdleMs?: number;
  maxSessions?: number;
}

interface Session {
  transport: StreamableHTTPServerTransport;
  server: McpServer;
  accountId: string;
  clientId: string;
  lastSeen: number;
}

const SESSION_HEADER = 'mcp-session-id';

/**
 * The resource server: protected-resource metadata (RFC 9728), the bearer gate, and Streamable HTTP
 * sessions. A session is created by `initialize` and bound to the token's user and client; a request
 * carrying another user's session id is answered as if the session did not exist.
 */
export async function mcpRoutes(app: FastifyInstance, options: McpRoutesOptions): Promise<void> {
  const sessions = new Map<string, Session>();
  const idleMs = options.sessionIdleMs ?? 30 * 60_000;
  const maxSessions = options.maxSessions ?? 10_000;
  const { isAllowedOrigin } = options;

  const metadata = {
    resource: options.bearer.resourceUrl,
    authorization_servers: [options.issuer],
    scopes_supported: options.scopesSupported,
    bearer_methods_supported: ['header'],
    resource_name: 'Gatehouse MCP',
  };
  // RFC 9728 §3.1: the path-suffixed document for /mcp, and the root one for clients that probe there first.
  app.get('/.well-known/oauth-protected-resource/mcp', async () => metadata);
  app.get('/.well-known/oauth-protected-resource', async () => metadata);

  const gate = async (request: FastifyRequest): Promise<void> => {
    // MCP transport spec: validate Origin to stop DNS rebinding; servers without a browser client send none.
    const origin = request.headers.origin;
    if (origin !== undefined && !isAllowedOrigin(origin))
      throw new OAuthError('invalid_request', 'this Origin may not call the MCP endpoint', 403);
    const query = request.query as Record<string, unknown>;
    if ('access_token' in query)
      throw new OAuthError('invalid_request', 'access tokens are accepted only in the Authorization header', 400);
    (request.raw as typeof request.raw & { auth?: unknown }).auth = await verifyBearer(request.headers.authorization, options.bearer);
  };

  const sweep = setInterval(() => {
    const cutoff = Date.now() - idleMs;
    for (const session of sessions.values()) if (session.lastSeen < cutoff) void session.transport.close();
  }, 60_000);
  sweep.unref();
  // preClose, not onClose: open SSE streams would keep server.close() waiting forever.
  app.addHook('preClose', async () => {
    clearInterval(sweep);
    await Promise.all([...sessions.values()].map((session) => session.transport.close()));
  });

  const handle = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const auth = (request.raw as typeof request.raw & { auth: { extra: { accountId: string }; clientId: string } }).auth;
    const sessionId = request.headers[SESSION_HEADER];
    let session: Session | undefined;
    if (typeof sessionId === 'string') {
      session = sessions.get(sessionId);
      if (!session || session.accountId !== auth.extra.accountId || session.clientId !== auth.clientId) {
        reply.code(404).send({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        return;
      }
    } else if (request.method === 'POST' && isInitializeRequest(request.body)) {
      if (sessions.size >= maxSessions)
        throw new OAuthError('temporarily_unavailable', 'too many open MCP sessions, retry later', 503, { 'retry-after': '30' });
      session = openSession(auth.extra.accountId, auth.clientId);
    } else {
      reply.code(400).send({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null });
      return;
    }
    session.lastSeen = Date.now();
    await session.transport.handleRequest(request.raw, hijackReply(reply), request.body);
  };

  const openSession = (accountId: string, clientId: string): Session => {
    const server = options.createServer();
    const session: Session = {
      server,
      accountId,
      clientId,
      lastSeen: Date.now(),
      transport: new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => {
          sessions.set(id, session);
        },
      }),
    };
    session.transport.onclose = () => {
      if (session.transport.sessionId) sessions.delete(session.transport.sessionId);
      void server.close();
    };
    void server.connect(session.transport);
    return session;
  };

  app.route({ method: ['GET', 'POST', 'DELETE'], url: '/mcp', bodyLimit: 1024 * 1024, preHandler: gate, handler: handle });
}
