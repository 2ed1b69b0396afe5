import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import { readJson, requireOk, type ToolContext, ToolError, type UpstreamHandle } from '../tool-context.ts';
import { type ToolFamilyDeps, toolHandler } from '../tool-runner.ts';

const LABEL = 'Google Calendar';
/** Either upstream scope lets the tools read calendars; sign-in asks for the read-only one (GOOGLE_SCOPES). */
const CALENDAR_READONLY = 'https://www.googleapis.com/auth/calendar.readonly';
const CALENDAR_FULL = 'https://www.googleapis.com/auth/calendar';
const MAX_ACCOUNTS = 10;

const accountRef = z.string().trim().min(1).max(320);
const accountFields = {
  account: accountRef
    .optional()
    .describe('Which connected Google account to use: its `account` value from list_connections, or its email. Default: the first one.'),
  accounts: z
    .array(accountRef)
    .min(1)
    .max(MAX_ACCOUNTS)
    .optional()
    .describe('Read several connected Google accounts at once (values as for `account`); results are merged, each naming its account.'),
};
type AccountArgs = { account?: string | undefined; accounts?: string[] | undefined };
const eitherAccountOrAccounts = [
  (args: AccountArgs) => !(args.account && args.accounts),
  { message: 'Pass account or accounts, not both' },
] as const;

// RFC 3339 with `Z` or an offset: Google refuses a time without one.
const rfc3339 = z.iso.datetime({ offset: true });
const eventsInput = z
  .object({
    ...accountFields,
    calendarId: z
      .string()
      .min(1)
      .max(256)
      // Never `.`/`..` or a slash: the id is a path segment and must not climb out of /calendars/.
      .regex(/^(?!\.{1,2}$)[^\s/\\\p{Cc}]+$/u, 'Not a calendar id')
      .default('primary')
      .describe('The calendar to read: `primary` (the account’s main calendar) or an id from google_calendar_list_calendars.'),
    timeMin: rfc3339.optional().describe('Only events ending after this time, RFC 3339 (2026-05-01T00:00:00Z). Default: now.'),
    timeMax: rfc3339.optional().describe('Only events starting before this time, RFC 3339.'),
    maxResults: z.number().int().min(1).max(250).default(25).describe('At most this many events (1-250), earliest first.'),
    q: z.string().trim().min(1).max(200).optional().describe('Free-text search in titles, descriptions, locations and attendees.'),
  })
  .refine(...eitherAccountOrAccounts)
  .refine((args) => !(args.timeMin && args.timeMax) || Date.parse(args.timeMin) < Date.parse(args.timeMax), {
    message: 'timeMin must be before timeMax',
    path: ['timeMax'],
  });

const accountTag = z.object({ id: z.string(), email: z.string().nullable() }).describe('The connected Google account this came from');
type Tag = z.infer<typeof accountTag>;
const failures = z.array(z.object({ account: accountTag, message: z.string() })).describe('Accounts that could not be read');
const calendarSchema = z.object({
  account: accountTag,
  id: z.string(),
  summary: z.string(),
  description: z.string().nullable(),
  primary: z.boolean(),
  accessRole: z.string().nullable(),
  timeZone: z.string().nullable(),
});
const eventSchema = z.object({
  account: accountTag,
  calendarId: z.string(),
  id: z.string(),
  summary: z.string().nullable(),
  start: z.string().nullable().describe('RFC 3339 date-time, or a date for all-day events'),
  end: z.string().nullable(),
  allDay: z.boolean(),
  location: z.string().nullable(),
  status: z.string().nullable(),
  htmlLink: z.string().nullable(),
  description: z.string().nullable(),
});
type Calendar = z.infer<typeof calendarSchema>;
type CalendarEvent = z.infer<typeof eventSchema>;

/** Google's JSON, as far as the tools read it; every field is checked before use. */
type GoogleCalendar = Record<'id' | 'summary' | 'summaryOverride' | 'description' | 'primary' | 'accessRole' | 'timeZone', unknown>;
type GoogleTime = { dateTime?: unknown; date?: unknown } | undefined;
type GoogleEvent = Record<'id' | 'summary' | 'description' | 'location' | 'status' | 'htmlLink', unknown> & {
  start?: GoogleTime;
  end?: GoogleTime;
};

const text = (value: unknown, max = 1000): string | null => (typeof value === 'string' ? value.slice(0, max) : null);
const timeOf = (time: GoogleTime): string | null => text(time?.dateTime, 64) ?? text(time?.date, 64);
const who = (tag: Tag): string => tag.email ?? tag.id;
const count = (items: unknown[], noun: string): string => `${items.length} ${noun}${items.length === 1 ? '' : 's'}`;
const listed = (lines: string[]): string => (lines.length ? `:\n${lines.join('\n')}` : '.');

/** `google_calendar_list_calendars` and `google_calendar_list_events` (scope `google.calendar`), read as the caller at Google. */
export function registerGoogleCalendarTools(server: McpServer, deps: ToolFamilyDeps): void {
  const api = `${deps.apiUrls.google}/calendar/v3`;

  server.registerTool(
    'google_calendar_list_calendars',
    {
      title: 'List Google calendars',
      description:
        'Lists the calendars in the user’s Google Calendar (their own, shared and subscribed ones) with the id to pass to google_calendar_list_events. Use it to find a calendar other than the primary one, or to see which calendars exist.',
      inputSchema: z.object(accountFields).refine(...eitherAccountOrAccounts),
      outputSchema: { calendars: z.array(calendarSchema), failures },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    toolHandler(deps, 'google_calendar_list_calendars', async (args, context) => {
      const read = await readAccounts(context, args, async (handle, account) => {
        const page = await readPage<GoogleCalendar>(handle, `${api}/users/me/calendarList?maxResults=250`);
        return { ...page, items: page.items.map((item) => toCalendar(item, account)) };
      });
      const lines = read.items.map(
        (c) => `- ${c.summary}${c.primary ? ' (primary)' : ''}: id ${c.id}${read.accounts > 1 ? ` [${who(c.account)}]` : ''}`,
      );
      const summary = `${count(read.items, 'calendar')}${listed(lines)}${failureText(read.failures)}`;
      return { structuredContent: { calendars: read.items, failures: read.failures }, content: [{ type: 'text', text: summary }] };
    }),
  );

  server.registerTool(
    'google_calendar_list_events',
    {
      title: 'List Google Calendar events',
      description:
        'Lists events of one Google calendar in a time range, earliest first, with recurring events expanded into single occurrences. Use it to answer what is on the user’s schedule, when they are busy or free, or to find a meeting by words in it (`q`).',
      inputSchema: eventsInput,
      outputSchema: { events: z.array(eventSchema), truncated: z.boolean().describe('More events matched than returned'), failures },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    toolHandler(deps, 'google_calendar_list_events', async (args, context) => {
      const { calendarId, timeMax, maxResults, q } = args;
      // Without a lower bound Google starts at the beginning of time; start now unless the range ends before now.
      const timeMin = args.timeMin ?? (timeMax && Date.parse(timeMax) <= Date.now() ? undefined : new Date().toISOString());
      const query = new URLSearchParams({ singleEvents: 'true', orderBy: 'startTime', maxResults: String(maxResults) });
      for (const [name, value] of Object.entries({ timeMin, timeMax, q })) if (value) query.set(name, value);
      const read = await readAccounts(context, args, async (handle, account) => {
        const page = await readPage<GoogleEvent>(handle, `${api}/calendars/${encodeURIComponent(calendarId)}/events?${query}`);
        return { ...page, items: page.items.map((item) => toEvent(item, calendarId, account)) };
      });
      const merged = read.items.sort((a, b) => startOf(a) - startOf(b));
      const events = merged.slice(0, maxResults);
      const truncated = read.more || merged.length > events.length;
      const lines = events.map(
        (e) =>
          `- ${e.start ?? '?'} to ${e.end ?? '?'}: ${e.summary ?? '(no title)'}${e.location ? ` at ${e.location}` : ''}${read.accounts > 1 ? ` [${who(e.account)}]` : ''}`,
      );
      const range = `${timeMin ? ` from ${timeMin}` : ''}${timeMax ? ` until ${timeMax}` : ''}`;
      const more = truncated ? '\nMore events match: narrow the range or raise maxResults.' : '';
      const summary = `${count(events, 'event')} in ${calendarId}${range}${listed(lines)}${more}${failureText(read.failures)}`;
      return { structuredContent: { events, truncated, failures: read.failures }, content: [{ type: 'text', text: summary }] };
    }),
  );
}

const NEEDS_RECONNECT = 'This Google connection needs reconnecting: sign in with Google as it again.';

interface Gathered<T> {
  items: T[];
  /** Whether any account had more than one page. */
  more: boolean;
  /** How many accounts were read (tags are shown in the text only when several were). */
  accounts: number;
  failures: { account: Tag; message: string }[];
}

/**
 * Reads the Google accounts the caller chose (`account`, `accounts`, or their first), in parallel, each
 * only after checking it granted calendar access. With one account any failure is the answer; with
 * several, an account's `ToolError` becomes a failure entry beside the others' results, and so does an
 * account whose grant was already dead (untried), while a grant failing during the call (reconnect,
 * outage) still ends it so the runner can answer 401 or 503.
 */
async function readAccounts<T>(
  context: ToolContext,
  args: AccountArgs,
  read: (handle: UpstreamHandle, account: Tag) => Promise<{ items: T[]; more: boolean }>,
): Promise<Gathered<T>> {
  const handles = new Map<string, UpstreamHandle>();
  for (const wanted of args.accounts ?? [args.account]) {
    const handle = context.upstream('google', wanted); // only the caller's own connections; throws ToolError otherwise
    handles.set(handle.connection.id, handle);
  }
  const results = await Promise.all(
    [...handles.values()].map(async (handle) => {
      const account = { id: handle.connection.id, email: handle.connection.email };
      // Tried, a dead grant would end every merged call with 401, and re-authorizing as another account
      // would not repair it: the client would loop. Named alone, it is tried (and its 401 sends the user to sign in as it).
      if (handles.size > 1 && handle.connection.status === 'dead') return { failure: { account, message: NEEDS_RECONNECT } };
      try {
        await requireCalendarScope(handle, account);
        return await read(handle, account);
      } catch (error) {
        if (handles.size > 1 && error instanceof ToolError) return { failure: { account, message: error.message } };
        throw error;
      }
    }),
  );
  const gathered: Gathered<T> = { items: [], more: false, accounts: handles.size, failures: [] };
  for (const result of results) {
    if ('failure' in result) gathered.failures.push(result.failure);
    else {
      gathered.items.push(...result.items);
      gathered.more ||= result.more;
    }
  }
  if (gathered.failures.length === handles.size) throw new ToolError(failureText(gathered.failures).trim());
  return gathered;
}

/** One page of a Calendar API list, read as the caller; `more` when Google has a next page. Items without an id are skipped. */
async function readPage<T extends { id: unknown }>(handle: UpstreamHandle, url: string): Promise<{ items: T[]; more: boolean }> {
  const page = await readJson<{ items?: unknown; nextPageToken?: unknown } | null>(await requireOk(await handle.fetch(url), LABEL), LABEL);
  const items = Array.isArray(page?.items) ? (page.items as (T | null)[]) : [];
  return { items: items.filter((item): item is T => typeof item?.id === 'string'), more: page?.nextPageToken !== undefined };
}

/** Refuses up front, with what to do, when the user's Google grant lacks calendar access (granular consent, GOOGLE_SCOPES). */
async function requireCalendarScope(handle: UpstreamHandle, account: Tag): Promise<void> {
  if ((await handle.hasUpstreamScope(CALENDAR_READONLY)) || (await handle.hasUpstreamScope(CALENDAR_FULL))) return;
  throw new ToolError(
    `The Google account ${who(account)} has not given Gatehouse access to its calendars. Reconnect it (sign in with Google again) and allow calendar access; if Google does not ask for it, the operator must add ${CALENDAR_READONLY} to GOOGLE_SCOPES.`,
  );
}

function failureText(list: Gathered<unknown>['failures']): string {
  return list.length ? `\nNot read: ${list.map((failure) => `${who(failure.account)}: ${failure.message}`).join(' ')}` : '';
}

function toCalendar(item: GoogleCalendar, account: Tag): Calendar {
  return {
    account,
    id: String(item.id),
    summary: text(item.summaryOverride) ?? text(item.summary) ?? String(item.id),
    description: text(item.description),
    primary: item.primary === true,
    accessRole: text(item.accessRole, 64),
    timeZone: text(item.timeZone, 64),
  };
}

function toEvent(item: GoogleEvent, calendarId: string, account: Tag): CalendarEvent {
  return {
    account,
    calendarId,
    id: String(item.id),
    summary: text(item.summary),
    start: timeOf(item.start),
    end: timeOf(item.end),
    allDay: typeof item.start?.date === 'string' && item.start?.dateTime === undefined,
    location: text(item.location),
    status: text(item.status, 64),
    htmlLink: text(item.htmlLink, 2000),
    description: text(item.description),
  };
}

/** Sort key: undated or unreadable starts go last. */
function startOf(event: CalendarEvent): number {
  const time = event.start ? Date.parse(event.start) : Number.NaN;
  return Number.isNaN(time) ? Number.MAX_SAFE_INTEGER : time;
}
