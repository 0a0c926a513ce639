/**
 * The adapter's half of the machine-to-machine grants: it completes the requests the machine
 * marks, just before sending them. RFC 7523 client assertions are signed here with jose (the key
 * never enters the machine), and the application's providers supply JWT bearer assertions and ID
 * tokens. Nothing produced here is logged or traced: the machine's recorded effect never has it.
 */
import { importJWK, importPKCS8, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import type { HttpRequest } from '../machines/http.js';
import type { RandomBytes } from './entropy.js';
import type { GrantCredentials } from './options.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Client assertions live one minute: long enough for clock skew, short enough to be useless if seen. */
const ASSERTION_LIFETIME_S = 60;
const MAX_ASSERTION_CHARS = 16_384;

export class CredentialUnavailable extends Error {
  override readonly name = 'CredentialUnavailable';
}

export class GrantSigner {
  private key: Promise<CryptoKey | KeyObject | Uint8Array> | undefined;

  constructor(
    private readonly credentials: GrantCredentials | undefined,
    private readonly randomBytes: RandomBytes,
    private readonly clock: () => number,
  ) {}

  /** The request as it goes on the wire: marked parameters filled in. Throws `CredentialUnavailable`. */
  async complete(request: HttpRequest): Promise<HttpRequest> {
    if (request.clientAuth === undefined && request.assertion === undefined) return request;
    const form = new URLSearchParams(request.body ?? '');
    if (request.assertion) {
      const { param, source, audience, resource } = request.assertion;
      const provider = source === 'id_token' ? this.credentials?.idTokenProvider : this.credentials?.assertionProvider;
      if (!provider) throw new CredentialUnavailable(`no ${source === 'id_token' ? 'ID token' : 'assertion'} provider is configured`);
      form.set(param, await this.fromProvider(provider, { audience, resource }));
    }
    if (request.clientAuth) {
      form.set('client_assertion_type', CLIENT_ASSERTION_TYPE);
      form.set('client_assertion', await this.clientAssertion(request.clientAuth.clientId, request.clientAuth.audience));
    }
    const { clientAuth: _c, assertion: _a, ...rest } = request;
    return { ...rest, body: form.toString() };
  }

  private async fromProvider(provider: (r: { audience: string; resource: string }) => string | Promise<string>, request: { audience: string; resource: string }): Promise<string> {
    let value: unknown;
    try {
      value = await provider(request);
    } catch {
      throw new CredentialUnavailable('the assertion provider failed');
    }
    if (typeof value !== 'string' || value.length === 0 || value.length > MAX_ASSERTION_CHARS) {
      throw new CredentialUnavailable('the assertion provider returned no usable assertion');
    }
    return value;
  }

  /** RFC 7523 §3: iss = sub = client_id, aud = the authorization server's issuer only, short exp, unique jti. */
  private async clientAssertion(clientId: string, audience: string): Promise<string> {
    const provider = this.credentials?.clientAssertionProvider;
    if (this.credentials?.privateKey === undefined) {
      if (provider) return this.fromProvider(provider, { audience, resource: '' });
      throw new CredentialUnavailable('private_key_jwt needs a private key or an assertion provider');
    }
    const alg = this.credentials.alg;
    let key: CryptoKey | KeyObject | Uint8Array;
    try {
      key = await (this.key ??= this.importKey(this.credentials.privateKey, alg));
    } catch {
      this.key = undefined;
      throw new CredentialUnavailable(`the private key cannot be used for ${alg}`);
    }
    const now = Math.floor(this.clock() / 1000);
    const jti = Buffer.from(this.randomBytes(16)).toString('base64url');
    return new SignJWT({})
      .setProtectedHeader({ alg, typ: 'JWT' })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(audience)
      .setIssuedAt(now)
      .setExpirationTime(now + ASSERTION_LIFETIME_S)
      .setJti(jti)
      .sign(key);
  }

  private importKey(privateKey: NonNullable<GrantCredentials['privateKey']>, alg: string): Promise<CryptoKey | KeyObject | Uint8Array> {
    return typeof privateKey === 'string' ? importPKCS8(privateKey, alg) : importJWK(privateKey as JWK, alg);
  }
}
