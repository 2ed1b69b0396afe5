import { randomUUID } from 'node:crypto';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hijackReply } from '../src/http.ts';

export interface BenchMcpOptions {
  createServer(): McpServer;
  /** Stands in for what the bearer gate would have attached: the account the tools act for. */
  authInfo: AuthInfo;
}

interface Session {
  transport: StreamableHTTPServerTransport;
  accountId: string;
  clientId: string;
  lastSeen: number;
}

type AuthedRaw = FastifyRequest['raw'] & { auth?: AuthInfo };

/**
 * `/mcp` with the session handling of `src/mcp/routes.ts` (`handle` and `openSession`, kept in step
 * by hand) and no bearer gate: a preHandler attaches a fixed AuthInfo instead of `verifyBearer`, so
 * the difference to Gatehouse's `/mcp` is exactly what the gate costs.
 */
export async function ungatedMcpRoutes(app: FastifyInstance, options: BenchMcpOptions): Promise<void> {
  const sessions = new Map<string, Session>();
  const attachAuth = async (request: FastifyRequest): Promise<void> => {
    (request.raw as AuthedRaw).auth = options.authInfo;
  };

  const openSession = (accountId: string, clientId: string): Session => {
    const server = options.createServer();
    const session: Session = {
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

  const handle = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const auth = (request.raw as AuthedRaw).auth as AuthInfo & { extra: { accountId: string } };
    const sessionId = request.headers['mcp-session-id'];
    let session: Session | undefined;
    if (typeof sessionId === 'string') {
      session = sessions.get(sessionId);
      if (!session || session.accountId !== auth.extra.accountId || session.clientId !== auth.clientId) {
        reply.code(404).send({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
        return;
      }
    } else if (request.method === 'POST' && isInitializeRequest(request.body)) {
      session = openSession(auth.extra.accountId, auth.clientId);
    } else {
      reply.code(400).send({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null });
      return;
    }
    session.lastSeen = Date.now();
    await session.transport.handleRequest(request.raw, hijackReply(reply), request.body);
  };

  app.addHook('preClose', async () => {
    await Promise.all([...sessions.values()].map((session) => session.transport.close()));
  });
  app.route({ method: ['GET', 'POST', 'DELETE'], url: '/mcp', bodyLimit: 1024 * 1024, preHandler: attachAuth, handler: handle });
}

/**
 * The SDK's documented stateless pattern: every request builds a new McpServer and a transport with
 * `sessionIdGenerator: undefined`, connects them, handles the one request, and closes both.
 */
export async function statelessMcpRoutes(app: FastifyInstance, options: BenchMcpOptions): Promise<void> {
  app.post('/mcp', { bodyLimit: 1024 * 1024 }, async (request, reply) => {
    const server = options.createServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    reply.raw.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    (request.raw as AuthedRaw).auth = options.authInfo;
    await transport.handleRequest(request.raw, hijackReply(reply), request.body);
  });
}
