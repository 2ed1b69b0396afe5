import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { formAction, hiddenField, UserAgent } from './user-agent.ts';

/** An in-memory OAuthClientProvider, as an MCP client keeps one per server. */
export class TestOAuthClient implements OAuthClientProvider {
  clientInfo: OAuthClientInformationMixed | undefined;
  savedTokens: OAuthTokens | undefined;
  verifier = '';
  authorizationUrl: URL | undefined;

  readonly clientMetadata: OAuthClientMetadata;
  readonly clientMetadataUrl: string | undefined;

  constructor(
    clientMetadata: OAuthClientMetadata = {
      client_name: 'Flow Test Client',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    clientMetadataUrl?: string,
  ) {
    this.clientMetadata = clientMetadata;
    this.clientMetadataUrl = clientMetadataUrl;
  }

  get redirectUrl(): string {
    return String(this.clientMetadata.redirect_uris[0]);
  }
  clientInformation() {
    return this.clientInfo;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.clientInfo = info;
  }
  tokens() {
    return this.savedTokens;
  }
  saveTokens(tokens: OAuthTokens) {
    this.savedTokens = tokens;
  }
  redirectToAuthorization(url: URL) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

/**
 * What a person does in the browser: open the authorization URL, approve the client on the consent
 * page with the demo provider, type an email and name. Returns where the browser was sent at the end.
 */
export async function approveWithDemoLogin(
  agent: UserAgent,
  origin: string,
  authorizationUrl: string,
  user: { email: string; name: string },
): Promise<URL> {
  const consent = await agent.follow(authorizationUrl, origin);
  if (consent.response.status !== 200) throw new Error(`expected the consent page, got ${consent.response.status} at ${consent.url}`);
  const consentHtml = await consent.response.text();
  // A returning user with an approved client and a session may skip the consent page entirely.
  const approve = formAction(consentHtml, 'name="provider"');
  const afterConsent = await agent.submitForm(new URL(approve, origin).href, origin, {
    _csrf: hiddenField(consentHtml, '_csrf'),
    provider: 'demo',
  });
  if (!afterConsent.url.startsWith(origin) || afterConsent.response.status !== 200) return new URL(afterConsent.url);
  const loginHtml = await afterConsent.response.text();
  const done = await agent.submitForm(new URL(formAction(loginHtml), origin).href, origin, {
    _csrf: hiddenField(loginHtml, '_csrf'),
    ...user,
  });
  return new URL(done.url);
}

/** Connects the real SDK client to /mcp, going through the whole OAuth flow on the first 401. */
export async function connectWithLogin(
  origin: string,
  options: { user?: { email: string; name: string }; oauth?: TestOAuthClient; agent?: UserAgent } = {},
): Promise<{ client: Client; transport: StreamableHTTPClientTransport; oauth: TestOAuthClient; agent: UserAgent }> {
  const oauth = options.oauth ?? new TestOAuthClient();
  const agent = options.agent ?? new UserAgent();
  const user = options.user ?? { email: 'ada@example.com', name: 'Ada Lovelace' };
  const mcpUrl = new URL('/mcp', origin);
  const first = new StreamableHTTPClientTransport(mcpUrl, { authProvider: oauth });
  try {
    await new Client({ name: 'flow-test', version: '1.0.0' }).connect(first);
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  if (oauth.authorizationUrl) {
    const landed = await approveWithDemoLogin(agent, origin, oauth.authorizationUrl.href, user);
    const code = landed.searchParams.get('code');
    if (!code)
      throw new Error(
        `authorization did not return a code: landed at ${landed.origin}${landed.pathname} ${landed.searchParams.get('error')} ${landed.searchParams.get('error_description')}`,
      );
    await first.finishAuth(code);
    oauth.authorizationUrl = undefined;
  }
  const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: oauth });
  const client = new Client({ name: 'flow-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport, oauth, agent };
}
