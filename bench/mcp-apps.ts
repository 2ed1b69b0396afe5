import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { hijackReply } from '../src/http.ts';
import { toolCalled } from '../src/mcp/json-rpc.ts';
import { createMcpSessions } from '../src/mcp/sessions.ts';

export interface BenchMcpOptions {
  createServer(): McpServer;
  /** Stands in for what the bearer gate would have attached: the account the tools act for. */
  authInfo: AuthInfo;
  /** Gatehouse's tool-call rate limits, run as `mcpRoutes` runs them; none when absent. */
  beforeToolCall?(tool: string, auth: AuthInfo): void;
  /** As `mcpRoutes` passes it: a tool's upstream failure sets the response status. */
  upstreamChallenge?(): string;
}

type AuthedRaw = FastifyRequest['raw'] & { auth?: AuthInfo };

/**
 * `/mcp` with Gatehouse's own session handling (`createMcpSessions`, as `mcpRoutes` uses it) and no
 * bearer gate: a fixed AuthInfo stands in for `verifyBearer`. With `beforeToolCall` (and the audit in
 * the server's tools) the difference to Gatehouse's `/mcp` is exactly what the gate costs.
 */
export async function ungatedMcpRoutes(app: FastifyInstance, options: BenchMcpOptions): Promise<void> {
  const { createServer, upstreamChallenge, beforeToolCall, authInfo } = options;
  const sessions = createMcpSessions({ createServer, ...(upstreamChallenge ? { upstreamChallenge } : {}) });
  app.addHook('preClose', () => sessions.closeAll());
  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    bodyLimit: 1024 * 1024,
    handler: (request, reply) => {
      for (const message of Array.isArray(request.body) ? request.body : [request.body]) {
        const tool = toolCalled(message);
        if (tool !== undefined) beforeToolCall?.(tool, authInfo);
      }
      return sessions.handle(request, reply, authInfo);
    },
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
