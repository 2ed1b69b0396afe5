import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import { UpstreamGrantError } from '../upstream/types.ts';
import { createToolContext, runWithToolContext, type ToolContext, type ToolContextDeps, ToolError } from './tool-context.ts';
import { reportUpstreamFailure } from './upstream-outcome.ts';

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** What happened in one tool call, for the audit log: never arguments, never tokens. */
export interface ToolCallRecord {
  tool: string;
  accountId: string;
  clientId: string;
  outcome: 'ok' | 'tool_error' | 'reconnect' | 'upstream_unavailable' | 'internal_error';
  /** The last upstream API status, if the tool called one. */
  upstreamStatus: number | undefined;
  durationMs: number;
}

export interface ToolRunnerDeps extends ToolContextDeps {
  /** Called once per tool call, after it ends (the audit log). */
  onToolCall?(record: ToolCallRecord): void;
  /** An unexpected error inside a tool: logged by the app, answered to the model as a generic failure. */
  onInternalError?(tool: string, error: unknown): void;
}

/**
 * Wraps a tool's handler so every tool behaves the same: its context (caller, client, scopes,
 * upstream accounts) is built from the bearer gate's AuthInfo and set for everything it calls; a
 * `ToolError` becomes an `isError` result with its message; an upstream grant failure also sets the
 * HTTP status (401 reconnect, 503 retry, `upstream-outcome.ts`); anything else is a generic failure,
 * never a stack trace. Each call is reported once to `onToolCall`.
 */
export function toolHandler<Args>(
  deps: ToolRunnerDeps,
  tool: string,
  handler: (args: Args, context: ToolContext) => Promise<CallToolResult>,
): (args: Args, extra: Extra) => Promise<CallToolResult> {
  return async (args, extra) => {
    const started = performance.now();
    const context = createToolContext(deps, extra.authInfo);
    let outcome: ToolCallRecord['outcome'] = 'ok';
    try {
      const result = await runWithToolContext(context, () => handler(args, context));
      if (result.isError) outcome = 'tool_error';
      return result;
    } catch (error) {
      if (error instanceof ToolError) {
        outcome = 'tool_error';
        return failure(error.message);
      }
      if (error instanceof UpstreamGrantError) {
        outcome = error.kind === 'terminal' ? 'reconnect' : 'upstream_unavailable';
        reportUpstreamFailure(extra.authInfo, error);
        const advice = error.kind === 'terminal' ? 'Reconnect to sign in again.' : `Try again in ${error.retryAfter} seconds.`;
        return failure(`${error.message} ${advice}`);
      }
      outcome = 'internal_error';
      deps.onInternalError?.(tool, error);
      return failure('The tool failed inside Gatehouse. Try again; if it keeps failing, tell the operator.');
    } finally {
      deps.onToolCall?.({
        tool,
        accountId: context.accountId,
        clientId: context.clientId,
        outcome,
        upstreamStatus: context.upstreamStatuses.at(-1),
        durationMs: Math.round(performance.now() - started),
      });
    }
  };
}

/** What a tool family needs besides the runner: where its upstream API lives (GOOGLE_API_URL, GRAPH_API_URL, OWNERREZ_API_URL). */
export interface ToolFamilyDeps extends ToolRunnerDeps {
  apiUrls: { google: string; graph: string; ownerrez: string };
}

const failure = (text: string): CallToolResult => ({ isError: true, content: [{ type: 'text', text }] });
