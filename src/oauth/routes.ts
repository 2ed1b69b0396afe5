import type { EventEmitter } from 'node:events';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Provider } from 'oidc-provider';
import type { Commits } from '../db/commits.ts';
import { OAuthError } from '../errors.ts';
import { hijackReply } from '../http.ts';
import { isOurResource } from './provider.ts';
import { sanitizeRegistration } from './registration-policy.ts';
import type { ScopePolicy } from './scopes.ts';

export interface OAuthRoutesOptions {
  provider: Provider;
  publicUrl: string;
  resourceUrl: string;
  /** Whether X-Forwarded-For from a TLS-terminating proxy names the client (TRUST_PROXY). */
  trustProxy: boolean;
  /** The group commit; every response waits until the writes it may depend on are durable. */
  commits: Pick<Commits, 'pending' | 'durable'>;
  /** DCR requests per minute per client IP; shared egress IPs (claude.ai, ChatGPT) stay well below it. */
  registrationsPerMinute: number;
  scopes: ScopePolicy;
}

/** Paths oidc-provider serves, besides `/authorize` and `/register` which get their own handling below. */
const PROVIDER_PATHS = [
  '/.well-known/oauth-authorization-server',
  '/.well-known/openid-configuration',
  '/authorize',
  '/authorize/:uid',
  '/token',
  '/register/:clientId',
  '/revoke',
  '/introspect',
  '/jwks',
];

const REGISTRATION_BODY_LIMIT = 16 * 1024;

/**
 * Mounts oidc-provider. Its paths get the raw request (no content-type parsing: the provider reads
 * its own bodies), except `POST /register`, whose JSON we parse and sanitise first.
 */
export async function oauthRoutes(app: FastifyInstance, options: OAuthRoutesOptions): Promise<void> {
  const { provider, resourceUrl } = options;
  const publicUrl = new URL(options.publicUrl);
  // Koa logs its own errors (a client dropping the connection mid-body) to stderr unless someone listens.
  // Provider is a Koa application; its typings omit Koa's own 'error' event.
  (provider as unknown as EventEmitter).on('error', (error: Error) =>
    app.log.warn({ error: error.message }, 'oidc-provider connection error'),
  );
  provider.on('server_error', (_ctx: unknown, error: Error) => app.log.error({ err: error }, 'oidc-provider server error'));
  const callback = provider.callback();

  /**
   * Endpoint URLs in metadata and responses must come from PUBLIC_URL, never from a Host header the
   * client chose (that would let one request poison what discovery advertises).
   */
  const pinPublicOrigin = (request: FastifyRequest): void => {
    const headers = request.raw.headers;
    headers['x-forwarded-host'] = publicUrl.host;
    headers['x-forwarded-proto'] = publicUrl.protocol.slice(0, -1);
    if (!options.trustProxy) delete headers['x-forwarded-for'];
  };

  const dispatch = (request: FastifyRequest, reply: FastifyReply): void => {
    pinPublicOrigin(request);
    void callback(request.raw, hijackReply(reply, options.commits));
  };

  app.removeAllContentTypeParsers();
  // Leave the body stream unread for oidc-provider (a parser that consumed it breaks /token silently).
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  await app.register(rateLimit, { global: false });

  app.get('/authorize', (request, reply) => {
    request.raw.url = withAuthorizeDefaults(request.raw.url ?? '/authorize', resourceUrl, options.scopes.defaultScope);
    dispatch(request, reply);
  });
  for (const url of PROVIDER_PATHS.filter((path) => path !== '/authorize')) {
    // PUT /register/:clientId (RFC 7592 update) is routed below, through the same policy as POST /register.
    app.route({ method: url === '/register/:clientId' ? ['GET', 'DELETE'] : ['GET', 'POST', 'PUT', 'DELETE'], url, handler: dispatch });
  }

  app.register(async (registration) => {
    registration.addContentTypeParser(
      'application/json',
      { parseAs: 'string', bodyLimit: REGISTRATION_BODY_LIMIT },
      (_request, body, done) => {
        try {
          done(null, JSON.parse(body as string));
        } catch {
          done(new OAuthError('invalid_client_metadata', 'the request body is not valid JSON'));
        }
      },
    );
    registration.post(
      '/register',
      { config: { rateLimit: { max: options.registrationsPerMinute, timeWindow: '1 minute' } } },
      (request, reply) => {
        // oidc-provider reads an already-parsed body from req.body (lib/shared/selective_body.js).
        (request.raw as typeof request.raw & { body?: unknown }).body = sanitizeRegistration(request.body, {
          supportedScopes: options.scopes.names,
        });
        dispatch(request, reply);
      },
    );
    // An update replaces the whole registration, so it must pass the same policy, or a client could
    // register clean and then swap in redirect URIs that POST /register refuses.
    registration.put('/register/:clientId', (request, reply) => {
      const sanitized = sanitizeRegistration(request.body, { supportedScopes: options.scopes.names });
      // RFC 7592 §2.2: the update repeats client_id (and client_secret, if any); oidc-provider checks them.
      const { client_id, client_secret } = request.body as Record<string, unknown>;
      (request.raw as typeof request.raw & { body?: unknown }).body = {
        ...sanitized,
        ...(client_id !== undefined ? { client_id } : {}),
        ...(client_secret !== undefined ? { client_secret } : {}),
      };
      dispatch(request, reply);
    });
  });
}

/**
 * MCP clients send authorization requests without `scope` (ChatGPT on reconnect) or with the resource
 * spelled slightly differently; both are normalised here so the grant matches the token request.
 */
export function withAuthorizeDefaults(rawUrl: string, resourceUrl: string, defaultScope: string): string {
  const url = new URL(rawUrl, 'http://gatehouse.invalid');
  const params = url.searchParams;
  if (!params.get('scope')?.trim() && params.getAll('scope').length <= 1) params.set('scope', defaultScope);
  const resources = params.getAll('resource');
  if (resources.length === 1 && resources[0] !== resourceUrl && isOurResource(resources[0] as string, resourceUrl)) {
    params.set('resource', resourceUrl);
  }
  return `${url.pathname}${url.search}`;
}
