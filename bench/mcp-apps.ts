import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { hijackReply } from '../src/http.ts';
import { createMcpSessions } from '../src/mcp/sessions.ts';

export interface BenchMcpOptions {
  createServer(): McpServer;
  /** Stands in for what the bearer gate would have attached: the account the tools act for. */
  authInfo: AuthInfo;
}

type AuthedRaw = FastifyRequest['raw'] & { auth?: AuthInfo };

/**
 * `/mcp` with Gatehouse's own session handling (`createMcpSessions`, as `mcpRoutes` uses it) and no
 * bearer gate: a fixed AuthInfo stands in for `verifyBearer`, so the difference to Gatehouse's `/mcp`
 * is exactly what the gate costs.
 */
export async function ungatedMcpRoutes(app: FastifyInstance, options: BenchMcpOptions): Promise<void> {
  const sessions = createMcpSessions({ createServer: options.createServer });
  app.addHook('preClose', () => sessions.closeAll());
  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    bodyLimit: 1024 * 1024,
    handler: (request, reply) => sessions.handle(request, reply, options.authInfo),
  });
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
