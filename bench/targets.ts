import cors from '@fastify/cors';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Provider } from 'oidc-provider';
import { buildApp } from '../src/app.ts';
import type { Config } from '../src/config.ts';
import { corsPolicy } from '../src/cors.ts';
import { openDatabase, type Storage } from '../src/db/index.ts';
import { errorHandler } from '../src/error-handler.ts';
import { loggerOptions } from '../src/logging.ts';
import { createToolAudit } from '../src/mcp/audit.ts';
import { createOriginCheck } from '../src/mcp/origin.ts';
import { createMcpServer } from '../src/mcp/server.ts';
import { createToolRateLimiter, enforceToolRateLimits } from '../src/mcp/tool-limits.ts';
import type { ToolCallRecord } from '../src/mcp/tool-runner.ts';
import { createAdapterFactory } from '../src/oauth/adapter.ts';
import { loadSigningKeys } from '../src/oauth/keys.ts';
import { accountFinder, createProvider } from '../src/oauth/provider.ts';
import { createReplayHooks } from '../src/oauth/replay-policy.ts';
import { oauthRoutes } from '../src/oauth/routes.ts';
import { createScopePolicy } from '../src/oauth/scopes.ts';
import { createAccountStore } from '../src/upstream/accounts.ts';
import { createGrants, type Grants } from '../src/upstream/grants.ts';
import { createVault, type Vault } from '../src/upstream/vault.ts';
import { statelessMcpRoutes, ungatedMcpRoutes } from './mcp-apps.ts';
import { createMemoryAdapterFactory, describeRefreshToken, mintRefreshTokens, type RefreshTokenTemplate } from './refresh-tokens.ts';

export type TargetKind =
  | 'ceiling'
  | 'gatehouse'
  | 'ungated-gatehouse'
  | 'ungated-mcp'
  | 'bare-mcp'
  | 'stateless-mcp'
  | 'oauth-memory'
  | 'oauth-sqlite';

export interface Target {
  app: FastifyInstance;
  /** The fixed port Gatehouse needs (its PUBLIC_URL names it), or 0 for any. */
  port: number;
  /** Refresh tokens are minted through a provider with Gatehouse's configuration on the target's storage. */
  tokens?: TokenMinter;
}

export interface TokenMinter {
  describe(refreshToken: string): Promise<RefreshTokenTemplate>;
  mint(template: RefreshTokenTemplate, clientId: string, count: number): Promise<string[]>;
}

/** Mints through `provider` (its adapter decides how the writes are committed). */
function tokenMinter(provider: Provider): TokenMinter {
  return {
    describe: (refreshToken) => describeRefreshToken(provider, refreshToken),
    mint: (template, clientId, count) => mintRefreshTokens(provider, template, clientId, count),
  };
}

/** Fastify as Gatehouse constructs it (same logger settings, body limit), for the apps built here. */
const benchFastify = (config: Config): FastifyInstance =>
  Fastify({ logger: loggerOptions(config), trustProxy: config.trustProxy, bodyLimit: 64 * 1024 });

/** Gatehouse's app-wide plugins, registered as `buildApp` registers them, ahead of a bench route group. */
async function gatehouseBasics(app: FastifyInstance, config: Config): Promise<void> {
  await app.register(errorHandler);
  await app.register(cors, corsPolicy(createOriginCheck(config.publicUrl, config.mcpAllowedOrigins)));
}

/** The bench signs users in with the demo, as `buildApp` does with nothing configured. */
const benchScopes = createScopePolicy(['demo']);
/** No upstream tool family is enabled in the bench; the API origins are never called. */
const benchApiUrls = { google: 'https://www.googleapis.com', graph: 'https://graph.microsoft.com', ownerrez: 'https://api.ownerrez.com' };

/** Gatehouse's provider configuration (`buildApp`), with the adapter chosen by the benchmark. */
function benchProvider(config: Config, storage: Storage, adapter: 'sqlite' | 'memory'): Provider {
  const vault = createVault(config.encryptionKeys);
  const accounts = createAccountStore(storage, vault);
  return createProvider({
    config,
    adapter:
      adapter === 'sqlite'
        ? createAdapterFactory(storage.sqlite, storage.commits, vault, createReplayHooks(storage.sqlite))
        : createMemoryAdapterFactory(1_000_000),
    jwks: loadSigningKeys(storage.db, vault),
    findAccount: accountFinder(accounts),
    scopes: benchScopes,
    renderErrorPage: (title, message) => `${title}: ${message}`,
  });
}

/**
 * The tool-call rate limits and audit trail as `buildApp` wires them, on the target's own storage: the
 * minimal MCP app 'ungated-mcp' keeps them, as Gatehouse runs them.
 */
function benchToolGuards(config: Config, storage: Storage) {
  const audit = createToolAudit(storage.sqlite, storage.commits, { retentionDays: config.auditRetentionDays });
  const limiter = createToolRateLimiter(storage.sqlite, storage.commits, config.toolRateLimits);
  return { onToolCall: audit.recordCall, beforeToolCall: enforceToolRateLimits(limiter, audit.recordRateLimited) };
}

const upstreamChallenge = () => 'Bearer error="invalid_token"';

/**
 * Minimal MCP apps: the same McpServer over the same account store, behind the same CORS and error
 * handling, without the rest of Gatehouse. `ungated` keeps Gatehouse's rate limits, audit and
 * upstream-outcome handling; `bare` and `stateless` (the SDK's pattern) have none of them.
 */
async function benchMcpApp(config: Config, accountId: string, mode: 'ungated' | 'bare' | 'stateless'): Promise<FastifyInstance> {
  const storage = openDatabase(config.databasePath);
  const vault = createVault(config.encryptionKeys);
  const app = benchFastify(config);
  await gatehouseBasics(app, config);
  const guards = mode === 'ungated' ? benchToolGuards(config, storage) : undefined;
  const options = {
    ...(guards ? { beforeToolCall: guards.beforeToolCall, upstreamChallenge } : {}),
    createServer: benchServer(storage, vault, guards?.onToolCall),
    authInfo: benchAuthInfo(config, accountId),
  };
  await app.register(mode === 'stateless' ? statelessMcpRoutes : ungatedMcpRoutes, options);
  app.addHook('onClose', async () => storage.close());
  return app;
}

/** What the gate would have attached for the bench user's token, for the targets without a gate. */
const benchAuthInfo = (config: Config, accountId: string): AuthInfo => ({
  token: 'bench',
  clientId: 'bench-client',
  scopes: ['mcp'],
  resource: new URL(config.resourceUrl),
  extra: { accountId, grantId: 'bench-grant' },
});

/** oidc-provider mounted exactly as `buildApp` mounts it, with a chosen adapter and no DCR rate limit. */
async function benchOAuthApp(config: Config, adapter: 'sqlite' | 'memory'): Promise<Target> {
  const storage = openDatabase(config.databasePath);
  const provider = benchProvider(config, storage, adapter);
  const app = benchFastify(config);
  await gatehouseBasics(app, config);
  await app.register(oauthRoutes, {
    provider,
    publicUrl: config.publicUrl,
    resourceUrl: config.resourceUrl,
    trustProxy: config.trustProxy,
    commits: storage.commits,
    registrationsPerMinute: 1_000_000_000,
    scopes: benchScopes,
  });
  app.addHook('onClose', async () => storage.close());
  return { app, port: 0, tokens: tokenMinter(provider) };
}

/** Builds one benchmark target; each runs alone in its own process (see `target-process.ts`). */
export async function buildTarget(kind: TargetKind, config: Config, accountId: string): Promise<Target> {
  switch (kind) {
    case 'ceiling': {
      const app = benchFastify(config);
      app.get('/', async () => ({ hello: 'world' }));
      return { app, port: 0 };
    }
    case 'gatehouse': {
      // buildApp keeps its provider to itself; a second one with the same configuration, on the app's own
      // connection, writes rows the app's provider reads back. A second connection would deadlock now and
      // then: its writes wait (blocking this thread) for the app's open batch, which only this thread commits.
      const storage = openDatabase(config.databasePath, { checkpointer: {} });
      const app = await buildApp(config, { storage });
      return { app, port: config.port, tokens: tokenMinter(benchProvider(config, storage, 'sqlite')) };
    }
    case 'ungated-gatehouse': {
      // The same server as 'gatehouse' with only `verifyBearer` left out: every /mcp request is the bench user's.
      return { app: await buildApp(config, { dangerouslySkipBearerGate: benchAuthInfo(config, accountId) }), port: 0 };
    }
    case 'ungated-mcp':
      return { app: await benchMcpApp(config, accountId, 'ungated'), port: 0 };
    case 'bare-mcp':
      return { app: await benchMcpApp(config, accountId, 'bare'), port: 0 };
    case 'stateless-mcp':
      return { app: await benchMcpApp(config, accountId, 'stateless'), port: 0 };
    case 'oauth-memory':
      return benchOAuthApp(config, 'memory');
    case 'oauth-sqlite':
      return benchOAuthApp(config, 'sqlite');
  }
}

/** Builds the McpServer the bench's MCP apps serve, over their own account store, with or without the audit trail. */
function benchServer(storage: Storage, vault: Vault, onToolCall?: (record: ToolCallRecord) => void): () => McpServer {
  const accounts = createAccountStore(storage, vault);
  const grants = benchGrants(storage, vault);
  return () =>
    createMcpServer({
      accounts,
      grants,
      upstreams: new Map(),
      scopes: benchScopes,
      apiUrls: benchApiUrls,
      version: '0.1.0',
      ...(onToolCall ? { onToolCall } : {}),
    });
}

/** The bench's users signed in with the demo, whose tokens never need a refresh, so no upstream is called. */
function benchGrants(storage: Storage, vault: Vault): Grants {
  return createGrants({ ...storage, vault, upstreams: new Map(), onGrantDead: () => {} });
}
