import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { ToolFamilyDeps } from '../tool-runner.ts';

/** The Microsoft tool family (registered only when its provider is enabled). */
export function registerMicrosoftTools(_server: McpServer, _deps: ToolFamilyDeps): void {}
