import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { ScopePolicy } from '../oauth/scopes.ts';
import type { ToolFamilyDeps } from './tool-runner.ts';
import { registerGoogleCalendarTools } from './tools/google-calendar.ts';
import { registerIdentityTools } from './tools/identity.ts';
import { registerMicrosoftTools } from './tools/microsoft.ts';
import { registerOwnerRezTools } from './tools/ownerrez.ts';

export interface McpServerDeps extends ToolFamilyDeps {
  version: string;
  /** Which tool families exist here: one per enabled upstream provider (`oauth/scopes.ts`). */
  scopes: Pick<ScopePolicy, 'families'>;
}

/** Registers one tool family's tools; keyed by the upstream provider the family needs. */
const FAMILIES: Record<string, (server: McpServer, deps: ToolFamilyDeps) => void> = {
  google: registerGoogleCalendarTools,
  entra: registerMicrosoftTools,
  ownerrez: registerOwnerRezTools,
};

/**
 * The only `new McpServer`: one per MCP session. `tools/list` shows every tool of the enabled
 * families whatever the token's scopes, so a model can discover what needs a step-up.
 */
export function createMcpServer(deps: McpServerDeps): McpServer {
  const server = new McpServer({ name: 'gatehouse', version: deps.version }, { capabilities: { tools: {} } });
  registerIdentityTools(server, deps);
  for (const family of deps.scopes.families) if (family.provider) FAMILIES[family.provider]?.(server, deps);
  return server;
}
