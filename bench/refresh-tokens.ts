import type { AdapterFactory, Provider } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

/** What a real refresh token from the login flow looks like, minus its ids and its client. */
export interface RefreshTokenTemplate {
  accountId: string;
  grant: { resources: Record<string, string>; openidScope: string | undefined };
  token: Record<string, unknown>;
}

/** RefreshToken properties the refresh grant copies into the rotated token (lib/actions/grants/refresh_token.js). */
const COPIED = ['acr', 'amr', 'authTime', 'claims', 'expiresWithSession', 'gty', 'nonce', 'resource', 'scope', 'sessionUid', 'sid'];

/** Reads a refresh token the login flow issued, so minted ones carry exactly its shape. */
export async function describeRefreshToken(provider: Provider, value: string): Promise<RefreshTokenTemplate> {
  const refreshToken = await provider.RefreshToken.find(value);
  if (!refreshToken?.grantId) throw new Error('the login flow refresh token was not found');
  const grant = await provider.Grant.find(refreshToken.grantId);
  if (!grant) throw new Error('the login flow grant was not found');
  const record = refreshToken as unknown as Record<string, unknown>;
  const token = Object.fromEntries(COPIED.filter((key) => record[key] !== undefined).map((key) => [key, record[key]]));
  return { accountId: refreshToken.accountId, grant: { resources: { ...grant.resources }, openidScope: grant.openid?.scope }, token };
}

/**
 * Issues `count` refresh tokens through the provider's own models, each in its own Grant (as if
 * `count` users had each signed in once), for `clientId`. Returns the token values.
 */
export async function mintRefreshTokens(
  provider: Provider,
  template: RefreshTokenTemplate,
  clientId: string,
  count: number,
): Promise<string[]> {
  const client = await provider.Client.find(clientId);
  if (!client) throw new Error(`client ${clientId} is not registered`);
  // All at once: on SQLite the adapter's group commit then writes them in a few transactions.
  const mintOne = async (): Promise<string> => {
    const grant = new provider.Grant({ accountId: template.accountId, clientId });
    for (const [resource, scope] of Object.entries(template.grant.resources)) grant.addResourceScope(resource, scope);
    if (template.grant.openidScope) grant.addOIDCScope(template.grant.openidScope);
    const grantId = await grant.save();
    const refreshToken = new provider.RefreshToken({
      ...(template.token as { scope: string; gty: string }),
      accountId: template.accountId,
      client,
      grantId,
      iiat: Math.floor(Date.now() / 1000),
    });
    return refreshToken.save();
  };
  return Promise.all(Array.from({ length: count }, mintOne));
}

/**
 * oidc-provider's own in-memory adapter over a larger LRU: its default store holds 1,000 entries,
 * which would evict pre-minted tokens before the benchmark reached them.
 */
export function createMemoryAdapterFactory(maxEntries: number): AdapterFactory {
  const store = new LRU({ maxSize: maxEntries });
  return (model) => new MemoryAdapter(model, store);
}
