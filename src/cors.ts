import type { FastifyCorsOptions } from '@fastify/cors';

/** Endpoints browser-based MCP clients (MCP Inspector) call with fetch; any origin, no credentials. */
const OPEN_PATHS = /^\/(\.well-known\/|(token|register|revoke|introspect|jwks)(\/|\?|$))/;
const MCP_PATH = /^\/mcp(\?|$)/;

const common = { maxAge: 600, credentials: false, strictPreflight: false } as const;

/**
 * One CORS policy for the whole app (@fastify/cors registers a global OPTIONS route, so it is mounted
 * once). `/authorize` and the interaction pages are top-level navigations and get no CORS at all.
 */
export function corsPolicy(isAllowedMcpOrigin: (origin: string) => boolean): FastifyCorsOptions {
  // Built once: the delegator runs on every request, /mcp included.
  const open = {
    ...common,
    origin: true,
    methods: ['GET', 'POST', 'PUT', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', 'accept', 'mcp-protocol-version'],
    exposedHeaders: ['WWW-Authenticate'],
  };
  const mcp = {
    ...common,
    methods: ['GET', 'POST', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', 'accept', 'mcp-protocol-version', 'mcp-session-id', 'last-event-id'],
    // Retry-After: a browser client (Inspector) must be able to read how long a 429 or 503 asks it to wait.
    exposedHeaders: ['WWW-Authenticate', 'Mcp-Session-Id', 'Retry-After'],
  };
  const mcpAllowed = { ...mcp, origin: true };
  const mcpRefused = { ...mcp, origin: false };
  const none = { origin: false };
  return {
    hook: 'onRequest',
    delegator: (request, done) => {
      const url = request.url ?? '';
      if (MCP_PATH.test(url)) {
        const origin = request.headers.origin;
        return done(null, origin === undefined || isAllowedMcpOrigin(origin) ? mcpAllowed : mcpRefused);
      }
      return done(null, OPEN_PATHS.test(url) ? open : none);
    },
  };
}
