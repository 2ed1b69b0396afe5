import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import { readJson, requireOk, type ToolContext, ToolError, type UpstreamHandle } from '../tool-context.ts';
import { type ToolFamilyDeps, toolHandler } from '../tool-runner.ts';

const PROVIDER = 'entra';
const LABEL = 'Microsoft';
const DAY_MS = 24 * 60 * 60 * 1000;
/** calendarView needs a bounded window; a month keeps one page of answers meaningful. */
const MAX_RANGE_DAYS = 31;
const DEFAULT_RANGE_DAYS = 7;
const PROFILE_FIELDS = ['displayName', 'mail', 'userPrincipalName', 'jobTitle', 'officeLocation', 'preferredLanguage', 'id'] as const;
const EVENT_FIELDS = 'subject,start,end,location,organizer,webLink,isAllDay';
/** Any of these lets the caller read their own calendar; Entra names Graph scopes short or as full URIs. */
const CALENDAR_SCOPES = ['Calendars.Read', 'Calendars.ReadWrite', 'Calendars.Read.Shared', 'Calendars.ReadWrite.Shared'].flatMap(
  (scope) => [scope, `https://graph.microsoft.com/${scope}`],
);

const accountArg = z
  .string()
  .trim()
  .min(1)
  .max(320)
  .describe('Which of your Microsoft accounts to use: its `account` id from list_connections, or its email. Omit for your first one.');
const dateTimeArg = z.iso.datetime({ offset: true });

const profileSchema = {
  account: z.string().describe('The connection this came from (pass as `account`)'),
  displayName: z.string().nullable(),
  mail: z.string().nullable(),
  userPrincipalName: z.string().nullable(),
  jobTitle: z.string().nullable(),
  officeLocation: z.string().nullable(),
  preferredLanguage: z.string().nullable(),
  id: z.string().nullable(),
};

const eventSchema = z.object({
  account: z.string().describe('The connection this event came from (pass as `account`)'),
  accountEmail: z.string().nullable(),
  subject: z.string().nullable(),
  start: z.string().describe('ISO 8601, UTC'),
  end: z.string().describe('ISO 8601, UTC'),
  isAllDay: z.boolean(),
  location: z.string().nullable(),
  organizer: z.object({ name: z.string().nullable(), email: z.string().nullable() }).nullable(),
  webLink: z.string().nullable(),
});
type CalendarEvent = z.infer<typeof eventSchema>;

/** The slice of a Graph `event` we read (everything optional: never trust an upstream's shape). */
interface GraphEvent {
  subject?: string | null;
  start?: { dateTime?: string; timeZone?: string } | null;
  end?: { dateTime?: string; timeZone?: string } | null;
  isAllDay?: boolean | null;
  location?: { displayName?: string | null } | null;
  organizer?: { emailAddress?: { name?: string | null; address?: string | null } | null } | null;
  webLink?: string | null;
}

/** The Microsoft (Graph) tool family: the caller's profile and Outlook calendar, read as the caller. */
export function registerMicrosoftTools(server: McpServer, deps: ToolFamilyDeps): void {
  const graph = deps.apiUrls.graph.replace(/\/+$/, '');

  server.registerTool(
    'microsoft_profile',
    {
      title: 'Microsoft profile',
      description:
        "Reads the caller's Microsoft 365 / Entra ID profile from Microsoft Graph: display name, mail, user principal name, job title, office location, preferred language and object id. Use it for facts about the user's work identity; use whoami for which accounts are connected.",
      inputSchema: { account: accountArg.optional() },
      outputSchema: profileSchema,
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    toolHandler(deps, 'microsoft_profile', async ({ account }, context) => {
      const handle = context.upstream(PROVIDER, account);
      const url = new URL(`${graph}/v1.0/me`);
      url.searchParams.set('$select', PROFILE_FIELDS.join(','));
      const me = await readJson<Record<string, unknown>>(await requireOk(await handle.fetch(url), LABEL), LABEL);
      const profile = Object.fromEntries(PROFILE_FIELDS.map((field) => [field, text(me?.[field])])) as Record<
        (typeof PROFILE_FIELDS)[number],
        string | null
      >;
      const facts = [profile.jobTitle, profile.officeLocation].filter(Boolean).join(', ');
      return {
        structuredContent: { account: handle.connection.id, ...profile },
        content: [
          {
            type: 'text',
            text: `${profile.displayName ?? 'Unknown name'} <${profile.mail ?? profile.userPrincipalName ?? 'no mail'}>${facts ? ` — ${facts}` : ''}.`,
          },
        ],
      };
    }),
  );

  server.registerTool(
    'microsoft_calendar_list_events',
    {
      title: 'List Outlook calendar events',
      description: `Lists events of the caller's Outlook (Microsoft 365) calendar between two times, recurring events expanded, earliest first, in UTC. Use it for "what is on my calendar", free time or meetings. Defaults to the next ${DEFAULT_RANGE_DAYS} days; the range may span at most ${MAX_RANGE_DAYS} days. With several Microsoft accounts connected, pass \`accounts\` to merge their calendars (each event names its account).`,
      inputSchema: {
        start: dateTimeArg.optional().describe('Start of the range, ISO 8601 with offset (e.g. 2026-03-02T00:00:00Z). Default: now'),
        end: dateTimeArg
          .optional()
          .describe(`End of the range, after start, at most ${MAX_RANGE_DAYS} days later. Default: start + ${DEFAULT_RANGE_DAYS} days`),
        top: z.number().int().min(1).max(100).default(25).describe('At most this many events (1–100, default 25)'),
        account: accountArg.optional(),
        accounts: z
          .array(accountArg)
          .min(1)
          .max(10)
          .optional()
          .describe('Several of your Microsoft accounts (ids or emails) to read and merge; instead of `account`'),
      },
      outputSchema: { start: z.string(), end: z.string(), events: z.array(eventSchema), truncated: z.boolean() },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    toolHandler(deps, 'microsoft_calendar_list_events', async (args, context) => {
      const { start, end } = timeRange(args.start, args.end);
      const handles = resolveAccounts(context, args.account, args.accounts);
      // Tried, a dead grant would end every merged call with 401, and re-authorizing as another account
      // would not repair it: the client would loop. Named alone, it is tried (its 401 sends the user to sign in as it).
      const dead = handles.length > 1 ? handles.find((handle) => handle.connection.status === 'dead') : undefined;
      if (dead)
        throw new ToolError(
          `${dead.connection.email ?? dead.connection.id}: This Microsoft connection needs reconnecting: sign in with Microsoft as it again, or leave it out of accounts.`,
        );
      const pages = await Promise.all(handles.map((handle) => listEvents(handle, { start, end, top: args.top }, handles.length > 1)));
      const merged = pages.flatMap((page) => page.events).sort((a, b) => a.start.localeCompare(b.start));
      const events = merged.slice(0, args.top);
      const truncated = merged.length > events.length || pages.some((page) => page.truncated);
      const range = `${start.toISOString()} to ${end.toISOString()}`;
      const lines = events.map((event) => describeEvent(event, handles.length > 1));
      const more = truncated ? `\nMore events exist in this range: narrow it or raise top (at most 100).` : '';
      return {
        structuredContent: { start: start.toISOString(), end: end.toISOString(), events, truncated },
        content: [
          {
            type: 'text',
            text: events.length ? `${events.length} event(s) from ${range}:\n${lines.join('\n')}${more}` : `No events from ${range}.`,
          },
        ],
      };
    }),
  );

  /** One page of calendarView for one account (nextLink is never followed: `truncated` says there is more). */
  async function listEvents(
    handle: UpstreamHandle,
    range: { start: Date; end: Date; top: number },
    named: boolean,
  ): Promise<{ events: CalendarEvent[]; truncated: boolean }> {
    const { connection } = handle;
    const who = connection.email ?? connection.id;
    if (!(await hasCalendarScope(handle)))
      throw new ToolError(
        `Your Microsoft account ${who} has not granted Gatehouse access to its calendar (Calendars.Read). Reconnect it and grant calendar access when Microsoft asks; if it does not ask, the operator must add Calendars.Read to ENTRA_SCOPES.`,
      );
    const url = new URL(`${graph}/v1.0/me/calendarView`);
    url.searchParams.set('startDateTime', range.start.toISOString());
    url.searchParams.set('endDateTime', range.end.toISOString());
    url.searchParams.set('$top', String(range.top));
    url.searchParams.set('$orderby', 'start/dateTime');
    url.searchParams.set('$select', EVENT_FIELDS);
    try {
      // Graph answers in each event's own time zone unless told otherwise; UTC keeps merged lists sortable.
      const response = await requireOk(await handle.fetch(url, { headers: { prefer: 'outlook.timezone="UTC"' } }), LABEL);
      const page = await readJson<{ value?: unknown; '@odata.nextLink'?: unknown }>(response, LABEL);
      if (!Array.isArray(page?.value)) throw new ToolError(`${LABEL} sent an answer Gatehouse could not read. Try again in a moment.`);
      const events = (page.value as GraphEvent[]).map((event) => toEvent(event, connection.id, connection.email));
      return { events, truncated: typeof page['@odata.nextLink'] === 'string' };
    } catch (error) {
      if (named && error instanceof ToolError) throw new ToolError(`${who}: ${error.message}`);
      throw error;
    }
  }
}

/** The caller's accounts to read: `accounts` (deduplicated), else `account`, else the first one. Never another user's. */
function resolveAccounts(context: ToolContext, account: string | undefined, accounts: string[] | undefined): UpstreamHandle[] {
  if (account && accounts) throw new ToolError('Pass either `account` or `accounts`, not both.');
  if (!accounts) return [context.upstream(PROVIDER, account)];
  const handles = new Map<string, UpstreamHandle>();
  for (const wanted of accounts) {
    const handle = context.upstream(PROVIDER, wanted);
    handles.set(handle.connection.id, handle);
  }
  return [...handles.values()];
}

/** The window to read: validated, defaulted (now → +7 days), at most 31 days. */
function timeRange(startArg: string | undefined, endArg: string | undefined): { start: Date; end: Date } {
  const start = startArg ? new Date(startArg) : new Date();
  const end = endArg ? new Date(endArg) : new Date(start.getTime() + DEFAULT_RANGE_DAYS * DAY_MS);
  if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) throw new ToolError('start and end must be ISO 8601 date-times.');
  if (end <= start) throw new ToolError(`end (${end.toISOString()}) must be after start (${start.toISOString()}).`);
  if (end.getTime() - start.getTime() > MAX_RANGE_DAYS * DAY_MS)
    throw new ToolError(`The range may span at most ${MAX_RANGE_DAYS} days; split it into several calls.`);
  return { start, end };
}

/** Whether the token carries a calendar scope (true when Entra did not say which scopes it granted). */
async function hasCalendarScope(handle: UpstreamHandle): Promise<boolean> {
  for (const scope of CALENDAR_SCOPES) if (await handle.hasUpstreamScope(scope)) return true;
  return false;
}

function toEvent(event: GraphEvent, account: string, accountEmail: string | null): CalendarEvent {
  const organizer = event?.organizer?.emailAddress;
  return {
    account,
    accountEmail,
    subject: text(event?.subject),
    start: utc(event?.start?.dateTime),
    end: utc(event?.end?.dateTime),
    isAllDay: event?.isAllDay === true,
    location: text(event?.location?.displayName),
    organizer: organizer ? { name: text(organizer.name), email: text(organizer.address) } : null,
    webLink: text(event?.webLink),
  };
}

/** Graph's `2026-03-02T09:00:00.0000000` (UTC, as asked for with Prefer) → `2026-03-02T09:00:00.000Z`. */
function utc(dateTime: unknown): string {
  if (typeof dateTime !== 'string') return '';
  const parsed = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(dateTime) ? dateTime : `${dateTime}Z`);
  return Number.isNaN(parsed.getTime()) ? dateTime.slice(0, 40) : parsed.toISOString();
}

/** One line of the readable summary: when, what, where, and (merging accounts) whose. */
function describeEvent(event: CalendarEvent, tagged: boolean): string {
  const when = event.isAllDay ? `${event.start.slice(0, 10)} (all day)` : `${event.start} – ${event.end}`;
  const where = event.location ? ` @ ${event.location}` : '';
  const whose = tagged ? ` [${event.accountEmail ?? event.account}]` : '';
  return `- ${when}: ${event.subject ?? '(no subject)'}${where}${whose}`;
}

const text = (value: unknown): string | null => (typeof value === 'string' && value ? value : null);
