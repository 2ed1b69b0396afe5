/**
 * The scopes Gatehouse grants for its MCP resource, with the sentence the consent page shows for each.
 * Protected-resource metadata, AS metadata, the consent page and the bearer gate all read this list.
 */
export const RESOURCE_SCOPES = [
  { name: 'mcp', description: 'Use the Gatehouse MCP tools as you, starting with seeing which account you signed in with' },
] as const;

/** Granted when an authorization request carries no `scope` (ChatGPT reconnects without one). */
export const DEFAULT_SCOPE = 'mcp';

export const resourceScopeNames: readonly string[] = RESOURCE_SCOPES.map((scope) => scope.name);

/** Human-readable lines for the consent page; unknown names are skipped. */
export function describeScopes(names: Iterable<string>): { name: string; description: string }[] {
  const wanted = new Set(names);
  return RESOURCE_SCOPES.filter((scope) => wanted.has(scope.name)).map(({ name, description }) => ({ name, description }));
}
