import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import type { LinkedAccount } from '../../upstream/accounts.ts';
import { withUpstreamTokens } from '../../upstream/upstream-call.ts';
import type { ToolContext } from '../tool-context.ts';
import { type ToolRunnerDeps, toolHandler } from '../tool-runner.ts';

const identitySchema = z.object({
  provider: z.string(),
  email: z.string().nullable(),
  name: z.string().nullable(),
  status: z.enum(['ok', 'dead']),
  /** Whether email and name were just read from the upstream (userinfo, /v2/users/me) rather than remembered from login. */
  live: z.boolean(),
});
type Identity = z.infer<typeof identitySchema>;

const connectionSchema = z.object({
  account: z.string().describe('Pass this as `account` to a tool to act as this connection'),
  provider: z.string(),
  label: z.string(),
  email: z.string().nullable(),
  name: z.string().nullable(),
  status: z.enum(['ok', 'needs_reconnect']),
});

/** `whoami` and `list_connections`: every deployment has them (base scope). Who the caller is, and with which upstream accounts. */
export function registerIdentityTools(server: McpServer, deps: ToolRunnerDeps): void {
  /** Email and name as the upstream says them now, through the user's own fresh upstream token. */
  const lookUp = async (context: ToolContext, linked: LinkedAccount): Promise<Identity> => {
    const remembered = { provider: linked.provider, email: linked.email, name: linked.name, status: linked.status, live: false };
    const fetchIdentity = deps.upstreams.get(linked.provider)?.fetchIdentity;
    if (linked.status === 'dead' || !fetchIdentity) return remembered;
    const live = await withUpstreamTokens(deps.grants, context.accountId, linked.id, (tokens) => fetchIdentity(tokens));
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
    toolHandler(deps, 'whoami', async (_args, context) => {
      const { account } = context;
      if (!account)
        return { isError: true, content: [{ type: 'text', text: 'Your Gatehouse account no longer exists. Reconnect to sign in again.' }] };
      const identities = await Promise.all(account.upstream.map((linked) => lookUp(context, linked)));
      const primary = identities[0];
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
        structuredContent: { account: account.id, provider: primary?.provider ?? 'none', identities },
        content: [{ type: 'text', text: `You are ${who} (Gatehouse account ${account.id}).${others}` }],
      };
    }),
  );

  server.registerTool(
    'list_connections',
    {
      title: 'List connected accounts',
      description:
        'Lists the upstream accounts (Google, Microsoft, OwnerRez) connected to this Gatehouse account, with the `account` value to pass to other tools when you have several of one provider, and whether each needs reconnecting. Never returns tokens.',
      inputSchema: {},
      outputSchema: { connections: z.array(connectionSchema) },
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    toolHandler(deps, 'list_connections', async (_args, context) => {
      const linked = context.account?.upstream ?? [];
      const connections = linked.map((connection) => ({
        account: connection.id,
        provider: connection.provider,
        label: deps.upstreams.get(connection.provider)?.label ?? connection.provider,
        email: connection.email,
        name: connection.name,
        status: connection.status === 'ok' ? ('ok' as const) : ('needs_reconnect' as const),
      }));
      const lines = connections.map(
        (c) => `- ${c.label}: ${c.email ?? c.name ?? 'unknown'} (account ${c.account})${c.status === 'ok' ? '' : ' — needs reconnecting'}`,
      );
      return {
        structuredContent: { connections },
        content: [
          { type: 'text', text: connections.length ? `Connected accounts:\n${lines.join('\n')}` : 'No upstream account is connected.' },
        ],
      };
    }),
  );
}
