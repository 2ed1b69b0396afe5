import type { Adapter, AdapterFactory, AdapterPayload } from 'oidc-provider';

interface Entry {
  payload: AdapterPayload;
  expiresAt: number | undefined;
}

/** Models that hold a user's grant: dropping them is what "the user revoked consent" means upstream. */
const GRANT_MODELS = new Set(['Grant', 'AccessToken', 'RefreshToken', 'AuthorizationCode']);

/**
 * The fake's oidc-provider storage: one in-memory map. Its own rather than oidc-provider's memory
 * adapter because the fake must enumerate it (revoke every grant at once) and write the static client
 * (its redirect URIs grow while the fake runs).
 */
export class FakeStore {
  private readonly entries = new Map<string, Entry>();

  readonly factory: AdapterFactory = (model) => this.adapter(model);

  /** Replaces a model's record outright, e.g. the one client (oidc-provider rebuilds it when it changes). */
  put(model: string, id: string, payload: AdapterPayload): void {
    this.entries.set(`${model}:${id}`, { payload, expiresAt: undefined });
  }

  get(model: string, id: string): AdapterPayload | undefined {
    const entry = this.entries.get(`${model}:${id}`);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.entries.delete(`${model}:${id}`);
      return undefined;
    }
    return entry.payload;
  }

  /** Forgets every grant and every token and code issued under one. */
  revokeAllGrants(): void {
    for (const key of this.entries.keys()) {
      if (GRANT_MODELS.has(key.slice(0, key.indexOf(':')))) this.entries.delete(key);
    }
  }

  private adapter(model: string): Adapter {
    const key = (id: string) => `${model}:${id}`;
    const find = (predicate: (payload: AdapterPayload) => boolean) => {
      for (const [entryKey, entry] of this.entries) {
        if (entryKey.startsWith(`${model}:`) && predicate(entry.payload)) return this.get(model, entryKey.slice(model.length + 1));
      }
      return undefined;
    };
    return {
      upsert: async (id, payload, expiresIn) => {
        this.entries.set(key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
      },
      find: async (id) => this.get(model, id),
      findByUid: async (uid) => find((payload) => payload.uid === uid),
      findByUserCode: async (userCode) => find((payload) => payload.userCode === userCode),
      consume: async (id) => {
        const payload = this.get(model, id);
        if (payload) payload.consumed = Math.floor(Date.now() / 1000);
      },
      destroy: async (id) => {
        this.entries.delete(key(id));
      },
      revokeByGrantId: async (grantId) => {
        for (const [entryKey, entry] of this.entries) {
          if (entryKey.startsWith(`${model}:`) && entry.payload.grantId === grantId) this.entries.delete(entryKey);
        }
      },
    };
  }
}
