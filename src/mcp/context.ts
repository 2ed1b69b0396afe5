import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';

/** The Gatehouse account a tool call acts for, from the AuthInfo the bearer gate attached. */
export function accountIdOf(authInfo: AuthInfo | undefined): string {
  const accountId = authInfo?.extra?.accountId;
  // The bearer gate runs before every MCP request; reaching a tool without it is a wiring bug.
  if (typeof accountId !== 'string') throw new Error('tool called without an authenticated account');
  return accountId;
}
