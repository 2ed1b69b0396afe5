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
  return {
    hook: 'onRequest',
    delegator: (request, done) => {
      const url = request.url ?? '';
      if (OPEN_PATHS.test(url)) {
        return done(null, {
          ...common,
          origin: true,
          methods: ['GET', 'POST', 'PUT', 'DELETE'],
          allowedHeaders: ['authorization', 'content-type', 'accept', 'mcp-protocol-version'],
          exposedHeaders: ['WWW-Authenticate'],
        });
      }
      if (MCP_PATH.test(url)) {
        const origin = request.headers.origin;
        return done(null, {
          ...common,
          origin: origin === undefined || isAllowedMcpOrigin(origin),
          methods: ['GET', 'POST', 'DELETE'],
          allowedHeaders: ['authorization', 'content-type', 'accept', 'mcp-protocol-version', 'mcp-session-id', 'last-event-id'],
          exposedHeaders: ['WWW-Authenticate', 'Mcp-Session-Id'],
        });
      }
      return done(null, { origin: false });
    },
  };
}
