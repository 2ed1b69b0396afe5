import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { UpstreamGrantError } from '../../upstream/types.ts';
import { type ToolContext, ToolError, type UpstreamHandle } from '../tool-context.ts';
import { type ToolFamilyDeps, toolHandler } from '../tool-runner.ts';
import {
  accountError,
  BOOKING_STATUSES,
  type BookingOut,
  bookingOutput,
  getBooking,
  LABEL,
  listBookings,
  listProperties,
  ownerRezId,
  type Page,
  propertyOutput,
  type Tag,
  tagOf,
} from './ownerrez-api.ts';

const PROVIDER = 'ownerrez';
const MAX_ACCOUNTS = 10;

// Inputs: wire names (snake_case, as OwnerRez and most MCP tools spell them), strict (an unknown or
// misspelt argument is an error, not silently ignored), every string and array bounded.
const account = z
  .string()
  .trim()
  .min(1)
  .max(320)
  .describe('One of your OwnerRez connections: its `account` value from list_connections, or its email');
const selection = {
  account: account.optional().describe('Which of your OwnerRez connections to use (default: the first one you connected)'),
  accounts: z
    .array(account)
    .min(1)
    .max(MAX_ACCOUNTS)
    .optional()
    .describe('Several of your OwnerRez connections at once: results are merged, each item tagged with its account'),
};
type Selection = { account?: string | undefined; accounts?: string[] | undefined };
const oneSelection = (args: Selection) => !(args.account && args.accounts);
const oneSelectionError = { message: 'give either `account` or `accounts`, not both', path: ['accounts'] };

const propertiesInput = z
  .strictObject({
    ...selection,
    include_inactive: z.boolean().default(false).describe('Also list properties switched off in OwnerRez'),
    limit: z.number().int().min(1).max(200).default(100).describe('Most properties per account'),
  })
  .refine(oneSelection, oneSelectionError);

const bookingsInput = z
  .strictObject({
    ...selection,
    property_ids: z.array(ownerRezId).min(1).max(50).optional().describe('Only these properties (ids from ownerrez_list_properties)'),
    from: z.iso.date().optional().describe('Stays that end on or after this date (YYYY-MM-DD, property time)'),
    to: z.iso.date().optional().describe('Stays that start on or before this date (YYYY-MM-DD, property time)'),
    changed_since: z.iso
      .datetime({ offset: true })
      .optional()
      .describe('Only bookings created or changed since this instant (ISO 8601 with Z or an offset)'),
    status: z.enum(BOOKING_STATUSES).optional().describe('Only bookings with this status'),
    limit: z.number().int().min(1).max(200).default(50).describe('Most bookings per account'),
  })
  .refine(oneSelection, oneSelectionError)
  .refine((args) => !(args.from && args.to && args.from > args.to), { message: '`from` must not be after `to`', path: ['to'] });

const bookingInput = z.strictObject({
  booking_id: ownerRezId.describe('The OwnerRez booking id (the number in "ORB12345" is 12345)'),
  account: selection.account,
});

type AccountError = z.infer<typeof accountError>;

/**
 * Reads from each selected connection (`account`, each of `accounts`, or the oldest) and merges.
 * With several, one whose OwnerRez call failed, or whose grant is already dead, is reported beside the
 * others' results. A grant that dies during this call ends the whole call instead (401: the user's
 * Gatehouse grants were revoked with it, so the client must re-authorize anyway).
 */
async function acrossAccounts<T>(
  context: ToolContext,
  args: Selection,
  read: (handle: UpstreamHandle) => Promise<Page<T>>,
): Promise<{ items: T[]; more: Tag[]; errors: AccountError[] }> {
  const chosen = (args.accounts ?? [args.account]).map((wanted) => context.upstream(PROVIDER, wanted));
  const handles = chosen.filter((handle, index) => chosen.findIndex((other) => other.connection.id === handle.connection.id) === index);
  const merging = handles.length > 1;
  const errors: AccountError[] = [];
  const live = handles.filter((handle) => {
    if (!merging || handle.connection.status !== 'dead') return true;
    errors.push({ ...tagOf(handle), error: `This ${LABEL} connection needs reconnecting: sign in with ${LABEL} as it again.` });
    return false;
  });
  const settled = await Promise.allSettled(live.map(read));
  const fatal = settled.flatMap((outcome) =>
    outcome.status === 'rejected' && !(outcome.reason instanceof ToolError) ? [outcome.reason] : [],
  );
  if (fatal.length > 0) throw fatal.find((error) => error instanceof UpstreamGrantError && error.kind === 'terminal') ?? fatal[0];

  const result = { items: [] as T[], more: [] as Tag[], errors };
  settled.forEach((outcome, index) => {
    const tag = tagOf(live[index] as UpstreamHandle);
    if (outcome.status === 'rejected') errors.push({ ...tag, error: (outcome.reason as ToolError).message });
    else {
      result.items.push(...outcome.value.items);
      if (outcome.value.more) result.more.push(tag);
    }
  });
  if (errors.length === handles.length) throw new ToolError(errors.map((error) => error.error).join(' '));
  return result;
}

const money = (amount: number, currency: string | null) => `${amount.toFixed(2)}${currency ? ` ${currency}` : ''}`;
const plural = (count: number, one: string, many: string) => `${count} ${count === 1 ? one : many}`;

/** One line a host reads: who, where, when, status, money. */
function describeBooking(b: BookingOut): string {
  const who = b.type === 'block' ? 'block' : (b.guest_name ?? 'guest unknown');
  const total = b.total_amount === null ? '' : `, total ${money(b.total_amount, b.currency)}`;
  const owed = b.total_owed ? `, owed ${money(b.total_owed, b.currency)}` : '';
  return `#${b.id} ${who} at property ${b.property_id ?? '?'}: ${b.arrival ?? '?'} → ${b.departure ?? '?'}, ${b.status ?? 'status unknown'}${total}${owed}`;
}

/** The summary's closing lines: which accounts have more than was read, and which failed. */
const notes = (more: Tag[], errors: AccountError[], what: string): string[] => [
  ...more.map((tag) => `More ${what} exist in ${tag.account_email ?? tag.account}: narrow the filters or raise limit.`),
  ...errors.map((error) => `${error.account_email ?? error.account}: ${error.error}`),
];

const answer = (structuredContent: Record<string, unknown>, lines: string[]): CallToolResult => ({
  structuredContent,
  content: [{ type: 'text', text: lines.join('\n') }],
});

/** The OwnerRez tool family (registered only when its provider is enabled): read-only properties and bookings, as the caller. */
export function registerOwnerRezTools(server: McpServer, deps: ToolFamilyDeps): void {
  const apiUrl = deps.apiUrls.ownerrez;
  const annotations = { readOnlyHint: true, openWorldHint: true };

  server.registerTool(
    'ownerrez_list_properties',
    {
      title: 'List OwnerRez properties',
      description:
        "Lists the rental properties in the caller's OwnerRez account: id, name, whether active, bedrooms, bathrooms, how many it sleeps, and its town. Use it to find the property ids that ownerrez_list_bookings filters by, or for questions about the portfolio.",
      inputSchema: propertiesInput,
      outputSchema: { properties: z.array(propertyOutput), errors: z.array(accountError) },
      annotations,
    },
    toolHandler(deps, 'ownerrez_list_properties', async (args: z.infer<typeof propertiesInput>, context) => {
      const options = { includeInactive: args.include_inactive, limit: args.limit };
      const found = await acrossAccounts(context, args, (handle) => listProperties(handle, apiUrl, options));
      const properties = found.items.sort((a, b) => (a.name ?? '').localeCompare(b.name ?? '') || a.id - b.id);
      const lines = properties.map((p) => {
        const where = p.location ? ` (${p.location})` : '';
        const bedrooms = p.bedrooms === null ? '' : `, ${plural(p.bedrooms, 'bedroom', 'bedrooms')}`;
        return `- #${p.id} ${p.name ?? '(no name)'}${where}${p.active === false ? ', inactive' : ''}${bedrooms}`;
      });
      return answer({ properties, errors: found.errors }, [
        `${plural(properties.length, `${LABEL} property`, `${LABEL} properties`)}.`,
        ...lines,
        ...notes(found.more, found.errors, 'properties'),
      ]);
    }),
  );

  server.registerTool(
    'ownerrez_list_bookings',
    {
      title: 'List OwnerRez bookings',
      description:
        "Lists bookings (and owner blocks) in the caller's OwnerRez account: guest name, property id, arrival and departure, status, party size, channel and totals. Use it for who arrives or stays when, occupancy and revenue over dates. Without from, to or changed_since it lists stays that end today or later. Guest contact details are never returned.",
      inputSchema: bookingsInput,
      outputSchema: { bookings: z.array(bookingOutput), errors: z.array(accountError) },
      annotations,
    },
    toolHandler(deps, 'ownerrez_list_bookings', async (args: z.infer<typeof bookingsInput>, context) => {
      const from = args.from ?? (args.to || args.changed_since ? undefined : new Date().toISOString().slice(0, 10));
      const query = { propertyIds: args.property_ids, from, to: args.to, changedSince: args.changed_since, status: args.status };
      const found = await acrossAccounts(context, args, (handle) => listBookings(handle, apiUrl, query, args.limit));
      const bookings = found.items.sort((a, b) => (a.arrival ?? '').localeCompare(b.arrival ?? '') || a.id - b.id);
      const window = `${from ? ` ending on or after ${from}` : ''}${args.to ? ` starting on or before ${args.to}` : ''}`;
      return answer({ bookings, errors: found.errors }, [
        `${plural(bookings.length, `${LABEL} booking`, `${LABEL} bookings`)}${window}.`,
        ...bookings.map((b) => `- ${describeBooking(b)}`),
        ...notes(found.more, found.errors, 'bookings'),
      ]);
    }),
  );

  server.registerTool(
    'ownerrez_get_booking',
    {
      title: 'Get an OwnerRez booking',
      description:
        "Reads one booking from the caller's OwnerRez account by its id: guest name, property id, dates, status, party size, channel and totals (amount, paid, owed). Use it when the user names a booking (e.g. ORB12345) or to look closer at one from ownerrez_list_bookings.",
      inputSchema: bookingInput,
      outputSchema: { booking: bookingOutput },
      annotations,
    },
    toolHandler(deps, 'ownerrez_get_booking', async (args: z.infer<typeof bookingInput>, context) => {
      const booking = await getBooking(context.upstream(PROVIDER, args.account), apiUrl, args.booking_id);
      return answer({ booking }, [`Booking ${describeBooking(booking)}.`]);
    }),
  );
}
