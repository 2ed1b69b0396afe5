import type { Provider } from 'oidc-provider';
import { isLoopbackOnly } from '../oauth/registration-policy.ts';
import type { ScopePolicy } from '../oauth/scopes.ts';
import type { ConsentView } from './views.ts';

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

const OIDC_SCOPES = new Set(['openid', 'email', 'profile']);

/** What the consent page shows about the client asking: its name, where the browser goes back to, what it asks for. */
export async function describeClient(
  provider: Provider,
  interaction: Interaction,
  scopes: ScopePolicy,
  resourceUrl: string,
): Promise<Pick<ConsentView, 'clientName' | 'clientId' | 'redirectHost' | 'redirectUri' | 'unverified' | 'localhostOnly' | 'scopes'>> {
  const clientId = String(interaction.params.client_id);
  const client = await provider.Client.find(clientId);
  const redirectUri = String(interaction.params.redirect_uri);
  const url = URL.parse(redirectUri);
  return {
    clientName: client?.clientName ?? clientId,
    clientId,
    // A private-use scheme (cursor://…) has a host too; show the scheme when it does not.
    redirectHost: url?.host || url?.protocol || redirectUri,
    redirectUri,
    // Every client here registered itself (DCR) or named itself (a metadata document): none is vetted.
    unverified: true,
    localhostOnly: isLoopbackOnly(client?.redirectUris ?? [redirectUri]),
    scopes: await describeRequestedScopes(provider, interaction, scopes, resourceUrl),
  };
}

/**
 * Records the user's consent as an oidc-provider Grant and finishes the interaction, so that the
 * authorization endpoint resumes and redirects to the client with a code. Consent was given on our
 * page before the browser left Gatehouse; the grant covers exactly the scopes that were asked for.
 */
export async function completeAuthorization(
  provider: Provider,
  uid: string,
  accountId: string,
  resourceUrl: string,
  scopes: ScopePolicy,
): Promise<string | undefined> {
  const interaction = await provider.Interaction.find(uid);
  if (!interaction) return undefined;
  const { params } = interaction;
  const clientId = String(params.client_id);
  const existing = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined;
  const grant = existing && existing.accountId === accountId ? existing : new provider.Grant({ accountId, clientId });

  const requested = String(params.scope ?? '')
    .split(' ')
    .filter(Boolean);
  // oidc-provider checks every scope in its `scopes` list as an OIDC scope too, resource scopes included.
  const oidcScopes = requested.filter((scope) => OIDC_SCOPES.has(scope) || scopes.names.includes(scope));
  const resourceScopes = requested.filter((scope) => scopes.names.includes(scope));
  if (oidcScopes.length > 0) grant.addOIDCScope(oidcScopes.join(' '));
  if (resourceScopes.length > 0) grant.addResourceScope(resourceUrl, resourceScopes.join(' '));
  const grantId = await grant.save();

  interaction.result = { login: { accountId }, consent: { grantId } };
  await interaction.save(interaction.exp - Math.floor(Date.now() / 1000));
  return interaction.returnTo;
}

/**
 * What the client asks for, in words. On a step-up (the client already holds a grant and asks for
 * more), the scopes it does not have yet are marked as added, so the user sees what changes.
 */
async function describeRequestedScopes(provider: Provider, interaction: Interaction, scopes: ScopePolicy, resourceUrl: string) {
  const described = scopes.describe(String(interaction.params.scope ?? '').split(' '));
  const grant = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined;
  const held = new Set(
    String(grant?.getResourceScope(resourceUrl) ?? '')
      .split(' ')
      .filter(Boolean),
  );
  return described.map((scope) => ({ ...scope, added: held.size > 0 && !held.has(scope.name) }));
}

/** The client's original authorization request, to offer "Start again" after a failed login. */
export function restartUrl(interaction: { params: Record<string, unknown> }): string {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(interaction.params)) if (typeof value === 'string') query.set(key, value);
  return `/authorize?${query}`;
}
