/**
 * The adapter's half of the machine-to-machine grants: it completes the requests the machine
 * marks, just before sending them. RFC 7523 client assertions are signed here with jose (the key
 * never enters the machine), and the application's providers supply JWT bearer assertions and ID
 * tokens. Nothing produced here is logged or traced: the machine's recorded effect never has it.
 */
import { decodeProtectedHeader, SignJWT } from 'jose';
import { createPrivateKey, type JsonWebKeyInput, type KeyObject } from 'node:crypto';
import { quoteUntrusted } from '../machines/errors.js';
import { CREDENTIAL_UNAVAILABLE, err, ok, SIGNING_ALG_UNSUPPORTED, SIGNING_ALG_UNSUPPORTED_MESSAGE, type HttpRequest, type Result } from '../machines/http.js';
import type { RandomBytes } from './entropy.js';
import type { GrantCredentials } from './options.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/**
 * Client assertions live one minute: long enough for clock skew, short enough to be useless if seen.
 * C79 bounds it at five minutes; skew is corrected by `assertionClockOffsetSeconds`, never by a longer life.
 */
export const ASSERTION_LIFETIME_S = 60;
const MAX_ASSERTION_CHARS = 16_384;

/** A marked request the adapter cannot complete: nothing is sent; `reason` is the `http.failed` reason. */
export class CredentialUnavailable extends Error {
  override readonly name: string = 'CredentialUnavailable';
  readonly reason: string = CREDENTIAL_UNAVAILABLE;
}

/** C77: no algorithm both the key and the authorization server accept. The message names algorithms, never key material. */
export class SigningAlgUnsupported extends CredentialUnavailable {
  override readonly name: string = 'SigningAlgUnsupported';
  override readonly reason: string = SIGNING_ALG_UNSUPPORTED;
}

/** The JWS algorithms this signer produces: one per key type it accepts. */
export type ClientAssertionAlg = 'ES256' | 'RS256';

/** The key's own algorithm: EC P-256 → ES256, RSA → RS256; anything else (Ed25519, P-384, RSA-PSS…) → undefined. */
export function keyAlgorithm(key: KeyObject): ClientAssertionAlg | undefined {
  if (key.type !== 'private') return undefined;
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  return undefined;
}

/** Never signed or sent, whatever a server lists: no signature, or a symmetric MAC keyed by a public value. */
export function forbiddenAssertionAlg(alg: unknown): boolean {
  return typeof alg !== 'string' || alg.toLowerCase() === 'none' || /^HS/i.test(alg);
}

const MAX_LISTED_ALGS = 8;

function listed(algs: readonly string[]): string {
  const shown = algs.slice(0, MAX_LISTED_ALGS).map((a) => quoteUntrusted(a));
  return `[${shown.join(', ')}${algs.length > MAX_LISTED_ALGS ? ', …' : ''}]`;
}

/**
 * C77 (RFC 7523 §3, RFC 8414 §2): the algorithm of a client assertion. The configured one if
 * given, else the key's own; the configured one must be the key's. Only ES256 and RS256 are ever
 * produced, so `none` and HS* never are, whatever the metadata says. When the AS lists
 * `token_endpoint_auth_signing_alg_values_supported`, the algorithm must be in it, or nothing is
 * sent. An absent (or empty) list promises nothing either way (RFC 8414: the member is OPTIONAL,
 * and its absence says nothing about what the endpoint accepts), so the key's algorithm is used
 * and the AS decides; refusing would break every AS that omits the member.
 */
export function chooseClientAssertionAlg(
  keyAlg: ClientAssertionAlg | undefined,
  configured: ClientAssertionAlg | undefined,
  supported: readonly string[] | undefined,
  keyType = 'this',
): Result<ClientAssertionAlg, CredentialUnavailable> {
  if (keyAlg === undefined) {
    return err(new SigningAlgUnsupported(`${SIGNING_ALG_UNSUPPORTED_MESSAGE} for a ${keyType} key: ES256 needs an EC P-256 key, RS256 an RSA key`));
  }
  if (configured !== undefined && configured !== keyAlg) return err(new CredentialUnavailable(`the private key cannot be used for ${configured}`));
  const alg = configured ?? keyAlg;
  if (forbiddenAssertionAlg(alg)) return err(new SigningAlgUnsupported(`${SIGNING_ALG_UNSUPPORTED_MESSAGE}: ${alg} is never used`));
  if (supported !== undefined && supported.length > 0 && !supported.includes(alg)) {
    return err(
      new SigningAlgUnsupported(`${SIGNING_ALG_UNSUPPORTED_MESSAGE} both the key and the authorization server accept: the key signs ${alg}, the server lists ${listed(supported)}`),
    );
  }
  return ok(alg);
}

export class GrantSigner {
  private key: { key: KeyObject; alg: ClientAssertionAlg | undefined; type: string } | undefined;

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
      const { clientId, audience, signingAlgValuesSupported } = request.clientAuth;
      form.set('client_assertion', await this.clientAssertion(clientId, audience, signingAlgValuesSupported));
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
  private async clientAssertion(clientId: string, audience: string, supported: readonly string[] | undefined): Promise<string> {
    const provider = this.credentials?.clientAssertionProvider;
    if (this.credentials?.privateKey === undefined) {
      if (provider) return this.checkProvided(await this.fromProvider(provider, { audience, resource: '' }), supported);
      throw new CredentialUnavailable('private_key_jwt needs a private key or an assertion provider');
    }
    const configured = this.credentials.alg;
    let imported: NonNullable<GrantSigner['key']>;
    try {
      imported = this.key ??= this.importKey(this.credentials.privateKey);
    } catch {
      throw new CredentialUnavailable(`the private key cannot be used for ${configured ?? 'ES256 or RS256'}`);
    }
    const choice = chooseClientAssertionAlg(imported.alg, configured, supported, imported.type);
    if (!choice.ok) throw choice.error;
    const alg = choice.value;
    // C79: the configured offset corrects a local clock the AS disagrees with; the lifetime stays short.
    const now = Math.floor(this.clock() / 1000) + (this.credentials.clockOffsetSeconds ?? 0);
    const jti = Buffer.from(this.randomBytes(16)).toString('base64url');
    try {
      return await new SignJWT({})
        .setProtectedHeader({ alg, typ: 'JWT' })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(audience)
        .setIssuedAt(now)
        .setExpirationTime(now + ASSERTION_LIFETIME_S)
        .setJti(jti)
        .sign(imported.key);
    } catch {
      // e.g. an RSA modulus under 2048 bits: jose refuses it, and so do we.
      throw new CredentialUnavailable(`the private key cannot be used for ${alg}`);
    }
  }

  /** An application-signed assertion goes out only under the same rules as ours (C77): never none/HS*, and listed if there is a list. */
  private checkProvided(assertion: string, supported: readonly string[] | undefined): string {
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(assertion).alg;
    } catch {
      throw new CredentialUnavailable('the assertion provider returned no usable assertion');
    }
    if (forbiddenAssertionAlg(alg)) throw new SigningAlgUnsupported(`${SIGNING_ALG_UNSUPPORTED_MESSAGE}: the assertion provider's assertion uses ${quoteUntrusted(alg)}`);
    if (supported !== undefined && supported.length > 0 && !supported.includes(alg as string)) {
      throw new SigningAlgUnsupported(
        `${SIGNING_ALG_UNSUPPORTED_MESSAGE} both the assertion provider and the authorization server accept: the assertion uses ${quoteUntrusted(alg)}, the server lists ${listed(supported)}`,
      );
    }
    return assertion;
  }

  /** PKCS#8 (or PKCS#1 / SEC1) PEM, or a private JWK; the algorithm comes from the key itself. */
  private importKey(privateKey: NonNullable<GrantCredentials['privateKey']>): NonNullable<GrantSigner['key']> {
    const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : createPrivateKey({ key: privateKey, format: 'jwk' } as JsonWebKeyInput);
    const type = key.asymmetricKeyType === 'ec' ? `EC ${key.asymmetricKeyDetails?.namedCurve ?? ''}`.trim() : (key.asymmetricKeyType ?? 'unknown');
    return { key, alg: keyAlgorithm(key), type };
  }
}
