import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import { connectThroughUpstream, ENTRA_CLIENT, federationEnv, GOOGLE_CLIENT, OWNERREZ_CLIENT } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';

describe('MCP client through federated login', () => {
  let entra: FakeOidc;
  let google: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    entra = await startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret });
    google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
    ownerrez = await startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret });
    gatehouse = await startGatehouse(federationEnv({ entra, google, ownerrez }));
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([entra?.close(), google?.close(), ownerrez?.close()]);
  });

  for (const provider of ['entra', 'google', 'ownerrez']) {
    it(`signs in through ${provider} and whoami shows the identity read live upstream`, async () => {
      const { client } = await connectThroughUpstream(gatehouse.url, provider);
      const result = await client.callTool({ name: 'whoami', arguments: {} });
      expect(result.isError).toBeFalsy();
      expect(result.structuredContent).toMatchObject({ provider, identities: [{ provider, status: 'ok', live: true }] });
      await client.close();
    });
  }
});
