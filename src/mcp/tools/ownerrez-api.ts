import { z } from 'zod';
import { readJson, requireOk, ToolError, type UpstreamHandle } from '../tool-context.ts';

// What the OwnerRez tools rely on in OwnerRez's v2 API, read as the caller. OwnerRez's reference
// (api.ownerrez.com/help/v2) is not machine-readable; these shapes come from mirrors of it and from
// integrations that call it, so each is a named constant a change upstream edits once (DESIGN.md §5).

export const LABEL = 'OwnerRez';
const PROPERTIES_PATH = '/v2/properties';
const BOOKINGS_PATH = '/v2/bookings';
/** The `status` filter and field, spelled as OwnerRez does ("canceled"): help/v2, GET v2/bookings. */
export const BOOKING_STATUSES = ['active', 'canceled', 'pending'] as const;
/**
 * GET v2/bookings refuses a query that has neither `property_ids` nor `since_utc` ("Either
 * property_ids or since_utc is required", help/v2). Without either, `since_utc` is sent as this
 * instant, before any OwnerRez booking, so it filters nothing (as other integrations do).
 */
const SINCE_UTC_UNBOUNDED = '2000-01-01T00:00:00Z';
/**
 * Lists are pages of `items` with `limit`/`offset` and `next_page_url` (help/v2 "Pageable"). The
 * largest page OwnerRez serves is not documented: ask for at most this and go on with `offset`.
 * `next_page_url` is read only as "there is more": the caller's bearer never goes to a URL the
 * upstream chose.
 */
const PAGE_SIZE = 100;
const MAX_PAGES = 5;
/**
 * Asked for the guest's name only. OwnerRez then embeds its GuestPartialModel (names, email
 * addresses, phones, postal addresses); parsing keeps the names and drops the rest: a host needs who
 * is staying, while contact details stay in OwnerRez. Door codes and notes are never asked for.
 */
const INCLUDE_GUEST = 'include_guest';
/** OwnerRez ids are positive integers; no id beyond this survives a JSON number round trip. */
export const ownerRezId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

const tagged = { account: z.string().describe('The `account` this item came from'), account_email: z.string().nullable() };
export const propertyOutput = z.object({
  ...tagged,
  id: z.number(),
  name: z.string().nullable(),
  active: z.boolean().nullable(),
  bedrooms: z.number().nullable(),
  bathrooms: z.number().nullable(),
  max_guests: z.number().nullable(),
  location: z.string().nullable().describe('Town, region and country of the property'),
});
export const bookingOutput = z.object({
  ...tagged,
  id: z.number(),
  property_id: z.number().nullable(),
  status: z.string().nullable(),
  type: z.string().nullable().describe('booking, or block for dates the owner blocked'),
  arrival: z.string().nullable(),
  departure: z.string().nullable(),
  guest_name: z.string().nullable(),
  adults: z.number().nullable(),
  children: z.number().nullable(),
  pets: z.number().nullable(),
  channel: z.string().nullable().describe('Where it was booked (OwnerRez listing_site)'),
  currency: z.string().nullable(),
  total_amount: z.number().nullable(),
  total_paid: z.number().nullable(),
  total_owed: z.number().nullable(),
});
export const accountError = z.object({ ...tagged, error: z.string() });
export type Tag = z.infer<z.ZodObject<typeof tagged>>;
export type PropertyOut = z.infer<typeof propertyOutput>;
export type BookingOut = z.infer<typeof bookingOutput>;
export type Page<T> = { items: T[]; more: boolean };

// The upstream's shapes, parsed leniently (fields may be absent or null); unknown fields are stripped.
const wireNumber = z.number().nullish();
const wireText = z.string().nullish();
const wirePage = z.object({ items: z.array(z.unknown()), next_page_url: wireText });
const wireProperty = z.object({
  id: ownerRezId,
  name: wireText,
  active: z.boolean().nullish(),
  bedrooms: wireNumber,
  bathrooms: wireNumber,
  max_guests: wireNumber,
  address: z.object({ city: wireText, state: wireText, country: wireText }).nullish(),
});
const wireBooking = z.object({
  id: ownerRezId,
  property_id: wireNumber,
  arrival: wireText,
  departure: wireText,
  status: wireText,
  type: wireText,
  is_block: z.boolean().nullish(),
  adults: wireNumber,
  children: wireNumber,
  pets: wireNumber,
  listing_site: wireText,
  currency_code: wireText,
  total_amount: wireNumber,
  total_paid: wireNumber,
  total_owed: wireNumber,
  guest: z.object({ first_name: wireText, last_name: wireText }).nullish(),
});

export const tagOf = (handle: UpstreamHandle): Tag => ({ account: handle.connection.id, account_email: handle.connection.email });
const unreadable = () => new ToolError(`${LABEL} sent an answer Gatehouse could not read. Try again in a moment.`);
const getJson = (handle: UpstreamHandle, url: URL) => handle.fetch(url, { headers: { accept: 'application/json' } });
// Appended, not resolved: an OWNERREZ_API_URL with a path (a proxy) keeps it, as in upstream/ownerrez.ts.
const endpoint = (apiUrl: string, path: string) => new URL(`${apiUrl}${path}`);

/** The properties of one account; inactive ones only when asked. */
export async function listProperties(
  handle: UpstreamHandle,
  apiUrl: string,
  options: { includeInactive: boolean; limit: number },
): Promise<Page<PropertyOut>> {
  const url = endpoint(apiUrl, PROPERTIES_PATH);
  if (!options.includeInactive) url.searchParams.set('active', 'true');
  const { items, more } = await readList(handle, url, options.limit);
  return { items: parseEach(wireProperty, items).map((wire) => toProperty(tagOf(handle), wire)), more };
}

export interface BookingQuery {
  propertyIds?: number[] | undefined;
  /** Stays departing on or after (OwnerRez `from`, property time). */
  from?: string | undefined;
  /** Stays arriving on or before (OwnerRez `to`, property time). */
  to?: string | undefined;
  changedSince?: string | undefined;
  status?: (typeof BOOKING_STATUSES)[number] | undefined;
}

/** The bookings of one account that match `query`, with the guest's name. */
export async function listBookings(handle: UpstreamHandle, apiUrl: string, query: BookingQuery, limit: number): Promise<Page<BookingOut>> {
  const url = endpoint(apiUrl, BOOKINGS_PATH);
  const params = url.searchParams;
  if (query.propertyIds) params.set('property_ids', query.propertyIds.join(','));
  if (query.changedSince) params.set('since_utc', new Date(query.changedSince).toISOString());
  else if (!query.propertyIds) params.set('since_utc', SINCE_UTC_UNBOUNDED);
  if (query.from) params.set('from', query.from);
  if (query.to) params.set('to', query.to);
  if (query.status) params.set('status', query.status);
  params.set(INCLUDE_GUEST, 'true');
  const { items, more } = await readList(handle, url, limit);
  return { items: parseEach(wireBooking, items).map((wire) => toBooking(tagOf(handle), wire)), more };
}

/** One booking of the account, or a ToolError saying it has none by that id. */
export async function getBooking(handle: UpstreamHandle, apiUrl: string, bookingId: number): Promise<BookingOut> {
  const url = endpoint(apiUrl, `${BOOKINGS_PATH}/${bookingId}`);
  url.searchParams.set(INCLUDE_GUEST, 'true');
  const response = await getJson(handle, url);
  // Another user's booking answers 404 like a missing one: nothing tells the two apart.
  if (response.status === 404) {
    throw new ToolError(`There is no booking ${bookingId} in the ${LABEL} account ${handle.connection.email ?? handle.connection.id}.`);
  }
  const parsed = wireBooking.safeParse(await readJson(await requireOk(response, LABEL), LABEL));
  if (!parsed.success) throw unreadable();
  return toBooking(tagOf(handle), parsed.data);
}

/** Reads up to `limit` items of a pageable list, page by page with `offset` on our own URL. */
async function readList(handle: UpstreamHandle, url: URL, limit: number): Promise<Page<unknown>> {
  const items: unknown[] = [];
  for (let page = 0; page < MAX_PAGES; page++) {
    url.searchParams.set('limit', String(Math.min(PAGE_SIZE, limit - items.length)));
    url.searchParams.set('offset', String(items.length));
    const body = wirePage.safeParse(await readJson(await requireOk(await getJson(handle, url), LABEL), LABEL));
    if (!body.success) throw unreadable();
    items.push(...body.data.items);
    if (!body.data.next_page_url || body.data.items.length === 0) return { items, more: false };
    if (items.length >= limit) return { items: items.slice(0, limit), more: true };
  }
  return { items, more: true };
}

function parseEach<S extends z.ZodType>(schema: S, items: unknown[]): z.infer<S>[] {
  return items.map((item) => {
    const parsed = schema.safeParse(item);
    if (!parsed.success) throw unreadable();
    return parsed.data;
  });
}

const joined = (parts: (string | null | undefined)[], separator: string) =>
  parts.filter((part): part is string => !!part?.trim()).join(separator) || null;

function toProperty(tag: Tag, wire: z.infer<typeof wireProperty>): PropertyOut {
  return {
    ...tag,
    id: wire.id,
    name: wire.name ?? null,
    active: wire.active ?? null,
    bedrooms: wire.bedrooms ?? null,
    bathrooms: wire.bathrooms ?? null,
    max_guests: wire.max_guests ?? null,
    location: joined([wire.address?.city, wire.address?.state, wire.address?.country], ', '),
  };
}

function toBooking(tag: Tag, wire: z.infer<typeof wireBooking>): BookingOut {
  return {
    ...tag,
    id: wire.id,
    property_id: wire.property_id ?? null,
    status: wire.status ?? null,
    type: wire.type ?? (wire.is_block ? 'block' : null),
    arrival: wire.arrival ?? null,
    departure: wire.departure ?? null,
    guest_name: joined([wire.guest?.first_name, wire.guest?.last_name], ' '),
    adults: wire.adults ?? null,
    children: wire.children ?? null,
    pets: wire.pets ?? null,
    channel: wire.listing_site ?? null,
    currency: wire.currency_code ?? null,
    total_amount: wire.total_amount ?? null,
    total_paid: wire.total_paid ?? null,
    total_owed: wire.total_owed ?? null,
  };
}
