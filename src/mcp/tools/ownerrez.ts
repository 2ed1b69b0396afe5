import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { ToolFamilyDeps } from '../tool-runner.ts';

/** The OwnerRez tool family (registered only when its provider is enabled). */
export function registerOwnerRezTools(_server: McpServer, _deps: ToolFamilyDeps): void {}
