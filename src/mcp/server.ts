import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { type IdentityToolDeps, registerIdentityTools } from './tools/identity.ts';

export interface McpServerDeps extends IdentityToolDeps {
  version: string;
}

/** The only `new McpServer`: one per MCP session, with every tool family registered. */
export function createMcpServer(deps: McpServerDeps): McpServer {
  const server = new McpServer({ name: 'gatehouse', version: deps.version }, { capabilities: { tools: {} } });
  registerIdentityTools(server, deps);
  return server;
}
