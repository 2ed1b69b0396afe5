import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import type { AccountStore, LinkedAccount } from '../../upstream/accounts.ts';
import type { Grants } from '../../upstream/grants.ts';
import { UpstreamGrantError, type UpstreamProvider } from '../../upstream/types.ts';
import { withUpstreamTokens } from '../../upstream/upstream-call.ts';
import { accountIdOf } from '../context.ts';
import { reportUpstreamFailure } from '../upstream-outcome.ts';

export interface IdentityToolDeps {
  accounts: AccountStore;
  grants: Grants;
  upstreams: ReadonlyMap<string, UpstreamProvider>;
}

const identitySchema = z.object({
  provider: z.string(),
  email: z.string().nullable(),
  name: z.string().nullable(),
  status: z.enum(['ok', 'dead']),
  /** Whether email and name were just read from the upstream (userinfo, /v2/users/me) rather than remembered from login. */
  live: z.boolean(),
});
type Identity = z.infer<typeof identitySchema>;

/** `whoami`: every deployment has it. Who the caller is, as Gatehouse and the upstream know them. */
export function registerIdentityTools(server: McpServer, deps: IdentityToolDeps): void {
  /** Email and name as the upstream says them now, through the user's own fresh upstream token. */
  const lookUp = async (accountId: string, linked: LinkedAccount): Promise<Identity> => {
    const remembered = { provider: linked.provider, email: linked.email, name: linked.name, status: linked.status, live: false };
    const fetchIdentity = deps.upstreams.get(linked.provider)?.fetchIdentity;
    if (linked.status === 'dead' || !fetchIdentity) return remembered;
    const live = await withUpstreamTokens(deps.grants, accountId, linked.id, (tokens) => fetchIdentity(tokens));
    return { ...remembered, email: live.email ?? linked.email, name: live.name ?? linked.name, live: true };
  };

  server.registerTool(
    'whoami',
    {
      title: 'Who am I',
      description:
        'Returns the Gatehouse account this connection acts as, and the upstream identities (provider, email, name) it is signed in with, read live from each provider. Use it to confirm which user and accounts later tool calls will act as.',
      inputSchema: {},
      outputSchema: { account: z.string(), provider: z.string(), identities: z.array(identitySchema) },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    async (_args, extra) => {
      const accountId = accountIdOf(extra.authInfo);
      const account = deps.accounts.findAccount(accountId);
      if (!account)
        return { isError: true, content: [{ type: 'text', text: 'Your Gatehouse account no longer exists. Reconnect to sign in again.' }] };
      let identities: Identity[];
      try {
        identities = await Promise.all(account.upstream.map((linked) => lookUp(accountId, linked)));
      } catch (error) {
        if (!(error instanceof UpstreamGrantError)) throw error;
        reportUpstreamFailure(extra.authInfo, error);
        const advice = error.kind === 'terminal' ? 'Reconnect to sign in again.' : `Try again in ${error.retryAfter} seconds.`;
        return { isError: true, content: [{ type: 'text', text: `${error.message} ${advice}` }] };
      }
      const primary = identities[0];
      const structured = { account: account.id, provider: primary?.provider ?? 'none', identities };
      const who = primary
        ? `${primary.name ?? primary.email ?? 'unknown'}${primary.email ? ` <${primary.email}>` : ''} via ${primary.provider}`
        : 'no linked identity';
      const others =
        identities.length > 1
          ? ` Also linked: ${identities
              .slice(1)
              .map((identity) => `${identity.email ?? identity.name ?? 'unknown'} via ${identity.provider}`)
              .join(', ')}.`
          : '';
      return {
        structuredContent: structured,
        content: [{ type: 'text', text: `You are ${who} (Gatehouse account ${account.id}).${others}` }],
      };
    },
  );
}
