import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { AccountStore } from '../upstream/accounts.ts';
import { registerIdentityTools } from './tools/identity.ts';

export interface McpServerDeps {
  accounts: AccountStore;
  version: string;
}

/** The only `new McpServer`: one per MCP session, with every tool family registered. */
export function createMcpServer(deps: McpServerDeps): McpServer {
  const server = new McpServer({ name: 'gatehouse', version: deps.version }, { capabilities: { tools: {} } });
  registerIdentityTools(server, deps.accounts);
  return server;
}
