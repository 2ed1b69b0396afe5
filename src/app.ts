import cors from '@fastify/cors';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from './config.ts';
import { corsPolicy } from './cors.ts';
import { openDatabase, type Storage } from './db/index.ts';
import { errorHandler } from './error-handler.ts';
import { loggerOptions } from './logging.ts';
import { loginRoutes } from './login/routes.ts';
import { createViews } from './login/views.ts';
import { createToolAudit } from './mcp/audit.ts';
import { createOriginCheck } from './mcp/origin.ts';
import { mcpRoutes } from './mcp/routes.ts';
import { createMcpServer } from './mcp/server.ts';
import { createToolRateLimiter, enforceToolRateLimits } from './mcp/tool-limits.ts';
import { accessTokenExistence, createAdapterFactory, purgeExpired, revokeAccountAccess } from './oauth/adapter.ts';
import { loadSigningKeys } from './oauth/keys.ts';
import { accountFinder, createProvider } from './oauth/provider.ts';
import { createReplayHooks } from './oauth/replay-policy.ts';
import { oauthRoutes } from './oauth/routes.ts';
import { BASE_SCOPE, createScopePolicy } from './oauth/scopes.ts';
import { createAccountStore } from './upstream/accounts.ts';
import { createGrants } from './upstream/grants.ts';
import { assertKeyringCovers } from './upstream/key-rotation.ts';
import { createUpstreams } from './upstream/registry.ts';
import { createVault } from './upstream/vault.ts';

export interface AppOverrides {
  /** See `ProviderOptions.dangerouslyFetchClientMetadata`; refused in production. */
  dangerouslyFetchClientMetadata?: typeof fetch;
  /** See `McpRoutesOptions.dangerouslySkipBearerGate` (the benchmark's ungated Gatehouse); refused in production. */
  dangerouslySkipBearerGate?: AuthInfo;
  /** Where log lines go (tests capture them to grep for canaries). */
  logStream?: NodeJS.WritableStream;
  /**
   * The database, opened by the caller (the benchmark mints tokens beside the app); the app closes it.
   * Never a second connection to the app's file in the same process: see `openDatabase`.
   */
  storage?: Storage;
}

/** Builds the whole app without listening. Read this first: every route group is registered here, in order. */
export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<FastifyInstance> {
  if (overrides.dangerouslyFetchClientMetadata && config.production)
    throw new Error('dangerouslyFetchClientMetadata is refused in production');
  if (overrides.dangerouslySkipBearerGate && config.production) throw new Error('dangerouslySkipBearerGate is refused in production');
  const app = Fastify({ logger: loggerOptions(config, overrides.logStream), trustProxy: config.trustProxy, bodyLimit: 64 * 1024 });
  const upstreams = createUpstreams(config);
  const scopes = createScopePolicy(upstreams.upstreams.keys());
  const storage =
    overrides.storage ??
    openDatabase(config.databasePath, {
      // WAL checkpoints on a thread of their own, not inside a token request's COMMIT (db/checkpointer.ts).
      checkpointer: {
        onError: (error) => app.log.warn({ reason: error.message }, 'WAL checkpointer stopped; checkpoints run inside commits'),
      },
    });
  const vault = createVault(config.encryptionKeys);
  assertKeyringCovers(storage.sqlite, vault); // a kid that still seals rows cannot be dropped (`keys rewrap` first)
  const accounts = createAccountStore(storage, vault);
  const grants = createGrants({
    ...storage,
    vault,
    upstreams: upstreams.upstreams,
    // A dead upstream grant ends the user's Gatehouse grants too: the MCP client gets 401 and re-authorizes.
    onGrantDead: (accountId) => revokeAccountAccess(storage.sqlite, accountId),
    onRevokeFailed: (upstreamAccountId, error) => app.log.warn({ upstreamAccountId, reason: error.message }, 'upstream revocation failed'),
  });
  const views = createViews();
  const provider = createProvider({
    config,
    adapter: createAdapterFactory(storage.sqlite, storage.commits, vault, createReplayHooks(storage.sqlite)),
    jwks: loadSigningKeys(storage.db, vault),
    findAccount: accountFinder(accounts),
    scopes,
    renderErrorPage: (title, message) => views.error({ title, message }),
    ...(overrides.dangerouslyFetchClientMetadata ? { dangerouslyFetchClientMetadata: overrides.dangerouslyFetchClientMetadata } : {}),
  });
  const { publicUrl, resourceUrl, trustProxy } = config;
  const { commits } = storage;
  const audit = createToolAudit(storage.sqlite, commits, { retentionDays: config.auditRetentionDays });
  const limiter = createToolRateLimiter(storage.sqlite, commits, config.toolRateLimits);
  const isAllowedOrigin = createOriginCheck(publicUrl, config.mcpAllowedOrigins);
  const oauth = { provider, publicUrl, resourceUrl, trustProxy, commits, registrationsPerMinute: 60, scopes };
  const login = {
    provider,
    db: storage.db,
    vault,
    views,
    accounts,
    ...upstreams,
    publicUrl,
    resourceUrl,
    scopes,
    cookieSecrets: config.cookieSecrets,
    commits,
  };
  const tools = {
    accounts,
    grants,
    upstreams: upstreams.upstreams,
    scopes,
    apiUrls: { ...config.apiUrls, ownerrez: config.upstreams.ownerrez?.apiUrl ?? 'https://api.ownerrez.com' },
    version: '0.1.0',
    onInternalError: (tool: string, error: unknown) => app.log.error({ tool, err: error }, 'tool failed inside Gatehouse'),
    onToolCall: audit.recordCall,
  };
  const mcp = {
    bearer: {
      provider,
      resourceUrl,
      resourceMetadataUrl: `${publicUrl}/.well-known/oauth-protected-resource/mcp`,
      requiredScopes: [BASE_SCOPE],
      challengeScopes: scopes.names,
      tokenExists: accessTokenExistence(storage.sqlite),
    },
    issuer: publicUrl,
    scopesSupported: scopes.names,
    requiredScope: scopes.requiredScope,
    isAllowedOrigin,
    createServer: () => createMcpServer(tools),
    // Proxy mode (MCP_BACKEND_URL): /mcp goes to the backend with the caller's upstream token, instead of our own tools.
    backend: config.backend && { ...config.backend, accounts, grants, upstreams: upstreams.upstreams, onToolCall: audit.recordCall },
    beforeToolCall: enforceToolRateLimits(limiter, audit.recordRateLimited), // 429 + Retry-After, persisted across restarts
    onToolDenied: audit.recordScopeDenial,
    dangerouslySkipBearerGate: overrides.dangerouslySkipBearerGate,
  };

  app.addHook('onSend', (_request, _reply, payload, done) => {
    // No response acknowledges a write before it is on disk (db/commits.ts); most have nothing to wait for.
    if (!commits.pending()) return done(null, payload);
    commits.durable().then(() => done(null, payload), done);
  });
  await app.register(errorHandler); // OAuthError → RFC 6749 body; opaque 500s
  await app.register(cors, corsPolicy(isAllowedOrigin)); // CORS for metadata, /register, /token, /revoke, /mcp; none for pages
  await app.register(oauthRoutes, oauth); // discovery, /authorize, /token, /register, /revoke, /introspect, /jwks
  await app.register(loginRoutes, login); // consent, upstream callback, demo sign-in
  await app.register(mcpRoutes, mcp); // protected-resource metadata, bearer gate, /mcp
  app.get('/healthz', async () => ({ status: 'ok' })); // container healthcheck

  const purge = setInterval(() => {
    purgeExpired(storage.sqlite);
    audit.purge(); // rows older than AUDIT_RETENTION_DAYS
    limiter.purgeIdle(); // limit rows of keys whose budget is full again
  }, 10 * 60_000);
  purge.unref();
  app.addHook('onClose', async () => {
    clearInterval(purge);
    limiter.close(); // writes the rate-limit state and audit rows still held in memory
    audit.close();
    storage.close();
  });
  return app;
}
