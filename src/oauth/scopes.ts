/**
 * The one policy that maps MCP tools to Gatehouse scopes (issue 4: "one policy file"). Everything
 * scope-shaped derives from it: `scopes_supported` in the protected-resource and AS metadata, what the
 * consent page says a client will be able to do, the default scope, and the per-tool runtime check.
 * A family exists only when its upstream provider is enabled (the base family always exists).
 */
export const TOOL_FAMILIES = [
  {
    scope: 'mcp',
    provider: undefined,
    description: 'See which Gatehouse account you are and which upstream accounts are connected to it',
    tools: ['whoami', 'list_connections'],
  },
  {
    scope: 'google.calendar',
    provider: 'google',
    description: 'Read your Google calendars and their events',
    tools: ['google_calendar_list_calendars', 'google_calendar_list_events'],
  },
  {
    scope: 'microsoft',
    provider: 'entra',
    description: 'Read your Microsoft profile and Outlook calendar events',
    tools: ['microsoft_profile', 'microsoft_calendar_list_events'],
  },
  {
    scope: 'ownerrez',
    provider: 'ownerrez',
    description: 'Read your OwnerRez properties and bookings',
    tools: ['ownerrez_list_properties', 'ownerrez_list_bookings', 'ownerrez_get_booking'],
  },
] as const;

/** The scope every MCP request needs (the bearer gate's check); family scopes are checked per tool. */
export const BASE_SCOPE = 'mcp';

export interface ScopePolicy {
  /** Every scope of this deployment, base first: `scopes_supported` and oidc-provider's list. */
  readonly names: readonly string[];
  /** Granted when an authorization request names no scope (ChatGPT reconnects without one): all of them. */
  readonly defaultScope: string;
  /** The tool families enabled here (for registering tools). */
  readonly families: readonly (typeof TOOL_FAMILIES)[number][];
  /** The scope a tool needs, or undefined for a tool this policy does not know (the SDK answers those). */
  requiredScope(tool: string): string | undefined;
  /** Human-readable lines for the consent page; unknown names are skipped. */
  describe(names: Iterable<string>): { name: string; description: string }[];
}

/** The policy for the providers enabled in this deployment (`upstreams` ids: entra, google, ownerrez, demo). */
export function createScopePolicy(enabledProviders: Iterable<string>): ScopePolicy {
  const enabled = new Set(enabledProviders);
  const families = TOOL_FAMILIES.filter((family) => family.provider === undefined || enabled.has(family.provider));
  const byTool = new Map<string, string>(families.flatMap((family) => family.tools.map((tool) => [tool, family.scope] as const)));
  const names = families.map((family) => family.scope);
  return {
    names,
    defaultScope: names.join(' '),
    families,
    requiredScope: (tool) => byTool.get(tool),
    describe(wanted) {
      const set = new Set(wanted);
      return families.filter((family) => set.has(family.scope)).map(({ scope, description }) => ({ name: scope, description }));
    },
  };
}
