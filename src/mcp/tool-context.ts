import { AsyncLocalStorage } from 'node:async_hooks';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { Account, AccountStore, LinkedAccount } from '../upstream/accounts.ts';
import type { Grants } from '../upstream/grants.ts';
import { type ApiAnswer, upstreamGet } from '../upstream/http.ts';
import { UpstreamGrantError, type UpstreamProvider } from '../upstream/types.ts';
import { withUpstreamTokens } from '../upstream/upstream-call.ts';
import { accountIdOf } from './context.ts';

/** A failure a tool reports to the model as an `isError` result; `message` is safe to show (no token, no stack). */
export class ToolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ToolError';
  }
}

/** One of the caller's upstream accounts, ready to call its API as the caller. */
export interface UpstreamHandle {
  readonly connection: LinkedAccount;
  /**
   * A GET with the caller's fresh upstream bearer, Gatehouse's User-Agent and a timeout. A 401 gets
   * one refresh and one retry; then the grant is retired and the call fails terminally (reconnect).
   * Network failures and timeouts become a retryable `ToolError`. The token never leaves this call.
   */
  fetch(url: string | URL, init?: { headers?: Record<string, string> }): Promise<ApiAnswer>;
  /** The fresh upstream access token itself, for forwarding to a backend MCP server (proxy mode) only. */
  accessToken(): Promise<string>;
  /**
   * Whether the upstream granted `scope` (from the token response's `scope`); true when the upstream
   * did not say, so a tool only refuses up front when it knows the scope is missing.
   */
  hasUpstreamScope(scope: string): Promise<boolean>;
}

/** What every tool call knows: who calls, through which client, with which scopes, and their upstream accounts. */
export interface ToolContext {
  readonly accountId: string;
  /** The caller's account as the call began (read once per call), or undefined when it no longer exists. */
  readonly account: Account | undefined;
  readonly clientId: string;
  readonly scopes: readonly string[];
  /** HTTP statuses of the upstream API calls made so far (for the audit log). */
  readonly upstreamStatuses: number[];
  /** The caller's linked accounts of one provider, oldest first (never another user's). */
  connections(provider: string): LinkedAccount[];
  /**
   * One of the caller's accounts at `provider`: the one whose id or email is `account`, else the
   * oldest. Throws `ToolError` when the caller has none or none matches (no other user's is ever found).
   */
  upstream(provider: string, account?: string): UpstreamHandle;
}

export interface ToolContextDeps {
  accounts: AccountStore;
  grants: Grants;
  upstreams: ReadonlyMap<string, UpstreamProvider>;
}

const current = new AsyncLocalStorage<ToolContext>();

/** The context of the tool call this code runs in (for code deeper than the handler, which gets it as an argument). */
export function currentToolContext(): ToolContext {
  const context = current.getStore();
  if (!context) throw new Error('no tool call in progress');
  return context;
}

/** Runs a tool handler with its context set for everything it calls, even across awaits. */
export function runWithToolContext<T>(context: ToolContext, run: () => Promise<T>): Promise<T> {
  return current.run(context, run);
}

/** Builds the context of one tool call from the AuthInfo the bearer gate attached to the request. */
export function createToolContext(deps: ToolContextDeps, authInfo: AuthInfo | undefined): ToolContext {
  const accountId = accountIdOf(authInfo);
  const account = deps.accounts.findAccount(accountId);
  const linked = account?.upstream ?? [];
  const connections = (provider: string) => linked.filter((connection) => connection.provider === provider);
  const upstreamStatuses: number[] = [];

  return {
    accountId,
    account,
    clientId: authInfo?.clientId ?? '',
    scopes: authInfo?.scopes ?? [],
    upstreamStatuses,
    connections,
    upstream(provider, account) {
      const label = deps.upstreams.get(provider)?.label ?? provider;
      const mine = connections(provider);
      if (mine.length === 0) throw new ToolError(`You have no connected ${label} account. Reconnect and sign in with ${label} to add one.`);
      const wanted = account?.trim().toLowerCase();
      const connection = wanted ? mine.find((c) => c.id === account || c.email?.toLowerCase() === wanted) : mine[0];
      if (!connection)
        throw new ToolError(
          `None of your connected ${label} accounts is "${String(account).slice(0, 100)}". Use list_connections to see them.`,
        );
      return {
        connection,
        fetch: (url, init = {}) =>
          withUpstreamTokens(deps.grants, accountId, connection.id, async (tokens) => {
            const headers = { ...init.headers, authorization: `Bearer ${tokens.accessToken}` };
            let response: ApiAnswer;
            try {
              response = await upstreamGet(label, new URL(url), headers);
            } catch (error) {
              if (error instanceof UpstreamGrantError) throw new ToolError(`${error.message}. Try again in a moment.`);
              throw error;
            }
            upstreamStatuses.push(response.status);
            if (response.status === 401) {
              throw new UpstreamGrantError('terminal', `${label} no longer accepts this account's token; reconnect your ${label} account`);
            }
            return response;
          }),
        accessToken: async () => (await deps.grants.freshTokens(accountId, connection.id)).accessToken,
        async hasUpstreamScope(scope) {
          const granted = (await deps.grants.freshTokens(accountId, connection.id)).scope;
          if (granted === undefined) return true;
          // Scope names compare case-insensitively at Entra, which may also qualify them with the resource
          // (`https://graph.microsoft.com/Calendars.Read` for `Calendars.Read`).
          const wanted = scope.toLowerCase();
          return granted.split(' ').some((name) => {
            const lower = name.toLowerCase();
            return lower === wanted || lower.endsWith(`/${wanted}`);
          });
        },
      };
    },
  };
}

/**
 * Turns an upstream API answer that is not a success into the message a model can act on (issue 4):
 * 403 lacks permission, 404 not found, 429 and 5xx retryable. Never the upstream body: it may echo input.
 */
export async function requireOk(response: ApiAnswer, label: string): Promise<ApiAnswer> {
  if (response.ok) return response;
  if (response.status === 403)
    throw new ToolError(`The ${label} account lacks permission for this (403). Its owner may need to grant access, then reconnect.`);
  if (response.status === 404) throw new ToolError(`${label} found nothing at that id (404).`);
  if (response.status === 429) throw new ToolError(`${label} is rate-limiting requests (429). Try again in a minute.`);
  if (response.status >= 500) throw new ToolError(`${label} is having trouble (${response.status}). Try again in a moment.`);
  throw new ToolError(`${label} refused the request (${response.status}).`);
}

/** Reads a JSON body, or a retryable `ToolError` when the upstream sent something else. */
export async function readJson<T>(response: ApiAnswer, label: string): Promise<T> {
  try {
    return (await response.json()) as T;
  } catch {
    throw new ToolError(`${label} sent an answer Gatehouse could not read. Try again in a moment.`);
  }
}
