import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import type { AccountStore } from '../../upstream/accounts.ts';
import { accountIdOf } from '../context.ts';

/** `whoami`: every deployment has it. Who the caller is, as Gatehouse and the upstream know them. */
export function registerIdentityTools(server: McpServer, accounts: AccountStore): void {
  server.registerTool(
    'whoami',
    {
      title: 'Who am I',
      description:
        'Returns the Gatehouse account this connection acts as, and the upstream identity (provider, email, name) it is signed in with. Use it to confirm which user and account later tool calls will act as.',
      inputSchema: {},
      outputSchema: {
        account: z.string(),
        provider: z.string(),
        identities: z.array(
          z.object({ provider: z.string(), email: z.string().nullable(), name: z.string().nullable(), status: z.enum(['ok', 'dead']) }),
        ),
      },
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async (_args, extra) => {
      const account = accounts.findAccount(accountIdOf(extra.authInfo));
      if (!account)
        return { isError: true, content: [{ type: 'text', text: 'Your Gatehouse account no longer exists. Reconnect to sign in again.' }] };
      const identities = account.upstream.map(({ provider, email, name, status }) => ({ provider, email, name, status }));
      const primary = identities[0];
      const structured = { account: account.id, provider: primary?.provider ?? 'none', identities };
      const who = primary
        ? `${primary.name ?? primary.email ?? 'unknown'}${primary.email ? ` <${primary.email}>` : ''} via ${primary.provider}`
        : 'no linked identity';
      return { structuredContent: structured, content: [{ type: 'text', text: `You are ${who} (Gatehouse account ${account.id}).` }] };
    },
  );
}
