import { randomUUID } from 'node:crypto';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { OAuthError } from '../errors.ts';
import { hijackReply } from '../http.ts';
import { accountIdOf } from './context.ts';
import { SessionTransport } from './transport.ts';
import { upstreamOutcomeStatus, withOutcomeSlot } from './upstream-outcome.ts';

export interface McpSessionsOptions {
  createServer(): McpServer;
  /** Sessions idle for this long are closed (the client re-initializes). */
  idleMs?: number;
  maxSessions?: number;
  /** One user's open sessions; opening one more closes that user's least recently used. */
  maxSessionsPerAccount?: number;
  /** The `WWW-Authenticate` of a 401 after a tool found the user's upstream grant dead (see upstream-outcome.ts). */
  upstreamChallenge?(): string;
}

export interface McpSessions {
  /** Serves one authenticated Streamable HTTP request: opens a session on `initialize`, else routes to one. */
  handle(request: FastifyRequest, reply: FastifyReply, auth: AuthInfo): Promise<void>;
  /** Closes every session (and so every open SSE stream); call before the HTTP server drains. */
  closeAll(): Promise<void>;
}

interface Session {
  transport: SessionTransport;
  accountId: string;
  clientId: string;
  lastSeen: number;
}

const notFound = { jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null };
const noSession = { jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no valid session id' }, id: null };

/**
 * Stateful Streamable HTTP sessions: one McpServer per session, built once at `initialize` rather
 * than per request (the SDK's stateless pattern rebuilds server and validators every call). A session
 * is bound to the user and client that opened it; another caller presenting its id gets "not found".
 */
export function createMcpSessions(options: McpSessionsOptions): McpSessions {
  const sessions = new Map<string, Session>();
  const idleMs = options.idleMs ?? 30 * 60_000;
  const maxSessions = options.maxSessions ?? 10_000;
  const maxPerAccount = options.maxSessionsPerAccount ?? 32;
  const { upstreamChallenge } = options;

  /** One token holder cannot fill the server with sessions: its oldest gives way to its newest. */
  const makeRoomFor = (accountId: string): void => {
    const own = [...sessions.values()].filter((session) => session.accountId === accountId);
    if (own.length < maxPerAccount) return;
    const oldest = own.reduce((a, b) => (a.lastSeen <= b.lastSeen ? a : b));
    void oldest.transport.close();
  };

  const sweep = setInterval(() => {
    const cutoff = Date.now() - idleMs;
    for (const session of sessions.values()) if (session.lastSeen < cutoff) void session.transport.close();
  }, 60_000);
  sweep.unref();

  const open = (accountId: string, clientId: string): Session => {
    const server = options.createServer();
    const session: Session = {
      accountId,
      clientId,
      lastSeen: Date.now(),
      // Plain JSON answers to POSTs (see transport.ts); server-initiated messages flow on the GET stream.
      transport: new SessionTransport({
        sessionId: randomUUID(),
        ...(upstreamChallenge ? { answerStatus: (auth: AuthInfo) => upstreamOutcomeStatus(auth, upstreamChallenge) } : {}),
        onInitialized: () => void sessions.set(session.transport.sessionId, session),
      }),
    };
    session.transport.onclose = () => {
      sessions.delete(session.transport.sessionId);
      void server.close();
    };
    void server.connect(session.transport);
    return session;
  };

  return {
    async handle(request, reply, auth) {
      const accountId = accountIdOf(auth);
      const sessionId = request.headers['mcp-session-id'];
      let session: Session | undefined;
      if (typeof sessionId === 'string') {
        session = sessions.get(sessionId);
        if (!session || session.accountId !== accountId || session.clientId !== auth.clientId)
          return void (await reply.code(404).send(notFound));
      } else if (request.method === 'POST' && isInitializeRequest(request.body)) {
        if (sessions.size >= maxSessions)
          throw new OAuthError('temporarily_unavailable', 'too many open MCP sessions, retry later', 503, { 'retry-after': '30' });
        makeRoomFor(accountId);
        session = open(accountId, auth.clientId);
      } else {
        return void (await reply.code(400).send(noSession));
      }
      session.lastSeen = Date.now();
      const callAuth = withOutcomeSlot(auth);
      await session.transport.handleRequest(request.raw, hijackReply(reply), request.body, callAuth);
    },
    async closeAll() {
      clearInterval(sweep);
      await Promise.all([...sessions.values()].map((session) => session.transport.close()));
    },
  };
}
