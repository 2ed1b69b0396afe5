import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OAuthError } from '../errors.ts';
import {
  type BearerOptions,
  bearerChallenge,
  bearerToken,
  lookUpBearer,
  missingTokenError,
  recallBearer,
  requireToolScope,
} from './bearer.ts';
import { toolCalled } from './json-rpc.ts';
import { type BackendProxyOptions, createBackendProxy, keepRawJsonBodies } from './proxy.ts';
import { createMcpSessions, type McpSessions, type McpSessionsOptions } from './sessions.ts';

export interface McpRoutesOptions extends McpSessionsOptions {
  bearer: BearerOptions;
  issuer: string;
  scopesSupported: readonly string[];
  /** Whether a browser `Origin` may call /mcp (see `origin.ts`). */
  isAllowedOrigin(origin: string): boolean;
  /** The scope a tool needs (`oauth/scopes.ts`); a `tools/call` without it is refused for step-up. */
  requiredScope?(tool: string): string | undefined;
  /** Runs before a `tools/call` reaches the tool (after the scope check); throws an OAuthError to refuse it (rate limits). */
  beforeToolCall?(tool: string, auth: AuthInfo): void;
  /** Proxy mode (MCP_BACKEND_URL): /mcp is forwarded to this backend instead of served by Gatehouse's own tools (`proxy.ts`). */
  backend?: Omit<BackendProxyOptions, 'challenge'> | undefined;
  /** Told of each `tools/call` refused for step-up (the audit trail). */
  onToolDenied?(tool: string, auth: AuthInfo): void;
  /**
   * Serves every /mcp request as this AuthInfo without looking at its token: the benchmark's "same
   * server without the gate". `buildApp` refuses it in production; nothing else sets it.
   */
  dangerouslySkipBearerGate?: AuthInfo | undefined;
}

type GatedRequest = FastifyRequest & { mcpAuth?: AuthInfo };

/**
 * The resource server: protected-resource metadata (RFC 9728), the bearer gate, and Streamable HTTP
 * sessions (`sessions.ts`), or in proxy mode the forwarding of the same requests to a backend (`proxy.ts`).
 */
export async function mcpRoutes(app: FastifyInstance, options: McpRoutesOptions): Promise<void> {
  const { isAllowedOrigin, backend } = options;
  const upstreamChallenge = () =>
    bearerChallenge(options.bearer, { code: 'invalid_token', description: 'the upstream account behind this token must be reconnected' });
  const sessions: McpSessions = backend
    ? createBackendProxy({ ...backend, challenge: upstreamChallenge })
    : createMcpSessions({ upstreamChallenge, ...options });
  if (backend) keepRawJsonBodies(app); // forwarded byte for byte
  // preClose, not onClose: open SSE streams would keep server.close() waiting forever.
  app.addHook('preClose', () => sessions.closeAll());

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

  // Every client's first request has no token: the gate answers it itself, with what the error handler
  // would send for the same OAuthError, but without building an Error for each one.
  const missing = missingTokenError(options.bearer);
  const missingAnswer = {
    headers: { ...missing.headers, 'cache-control': 'no-store', 'content-type': 'application/json; charset=utf-8' },
    body: JSON.stringify(missing.toJSON()),
  };

  /**
   * Runs at onRequest, so a request without a valid token is refused before its body is read. A
   * callback hook, not an async one: a token the gate already knows (every request of a session after
   * its first) passes without a promise or a turn of the microtask queue.
   */
  const gate = (request: GatedRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    const header = request.headers.authorization;
    let token: string;
    try {
      // MCP transport spec: validate Origin to stop DNS rebinding; servers without a browser client send none.
      const origin = request.headers.origin;
      if (origin !== undefined && !isAllowedOrigin(origin))
        throw new OAuthError('invalid_request', 'this Origin may not call the MCP endpoint', 403);
      // RFC 6750 §2.3 / RFC 9700 §2.5: never accept a token from the URL, where logs and Referer leak it.
      if (request.url.includes('access_token='))
        throw new OAuthError('invalid_request', 'access tokens are accepted only in the Authorization header', 400);
      const known = options.dangerouslySkipBearerGate ?? recallBearer(header, options.bearer);
      if (known) {
        request.mcpAuth = known;
        done();
        return;
      }
      if (header === undefined) {
        reply.code(401).headers(missingAnswer.headers).send(missingAnswer.body); // answered: `done` is not called
        return;
      }
      token = bearerToken(header, options.bearer); // a malformed header is refused here, without a promise
    } catch (error) {
      done(error as Error);
      return;
    }
    lookUpBearer(header, token, options.bearer).then((auth) => {
      request.mcpAuth = auth;
      done();
    }, done);
  };

  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: '/mcp',
    bodyLimit: 1024 * 1024,
    onRequest: gate,
    handler: (request, reply) => {
      const auth = (request as GatedRequest).mcpAuth as AuthInfo;
      // The SDK transport also accepts JSON-RPC batches: every call in one passes the same checks.
      for (const message of Array.isArray(request.body) ? request.body : [request.body]) {
        const tool = toolCalled(message);
        if (tool === undefined) continue;
        try {
          // A backend's tools are not in the scope policy: in proxy mode the gate's base scope is all they need.
          if (options.requiredScope && !backend) requireToolScope(message, auth, options.bearer, options.requiredScope);
        } catch (error) {
          options.onToolDenied?.(tool, auth);
          throw error;
        }
        options.beforeToolCall?.(tool, auth);
      }
      return sessions.handle(request, reply, auth);
    },
  });
}
