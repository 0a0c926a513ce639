/**
 * RFC 9449 DPoP, the adapter's half: one ES256 key pair per session (WebCrypto through jose, the
 * private key non-extractable and never in the machine), a fresh proof per request, and the
 * server-provided nonces kept per origin. Proofs and keys never reach a trace, log or error.
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { webcrypto } from 'node:crypto';
import { originOf } from '../machines/urls.js';
import type { RandomBytes } from './entropy.js';

/** RFC 9449 §8.1: NQCHAR (printable ASCII except `"` and `\`); a bound on length keeps it a nonce. */
const NONCE = /^[\x21\x23-\x5B\x5D-\x7E]{1,256}$/;

export function validNonce(value: string | null | undefined): value is string {
  return typeof value === 'string' && NONCE.test(value);
}

/** `htu`: the request URI without query and fragment (RFC 9449 §4.2). */
export function htuOf(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}

export class DpopProver {
  private keys: Promise<{ privateKey: CryptoKey; jwk: JWK }> | undefined;
  private readonly nonces = new Map<string, string>();

  constructor(
    private readonly randomBytes: RandomBytes,
    private readonly clock: () => number,
  ) {}

  private keyPair(): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
    this.keys ??= (async () => {
      const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: false });
      const { kty, crv, x, y } = await exportJWK(publicKey);
      return { privateKey, jwk: { kty, crv, x, y } as JWK };
    })();
    return this.keys;
  }

  /** The key's RFC 7638 thumbprint (what a server binds as `cnf.jkt`). */
  async thumbprint(): Promise<string> {
    return calculateJwkThumbprint((await this.keyPair()).jwk);
  }

  /** Remembers a server's nonce for its origin; a malformed or oversized one is refused (false). */
  rememberNonce(url: string, nonce: string | null | undefined): boolean {
    if (!validNonce(nonce)) return false;
    this.nonces.set(originOf(url), nonce);
    return true;
  }

  nonceFor(url: string): string | undefined {
    return this.nonces.get(originOf(url));
  }

  /** A fresh proof for one request; `accessToken` adds `ath` (resource requests). */
  async proof(method: string, url: string, accessToken?: string): Promise<string> {
    const { privateKey, jwk } = await this.keyPair();
    const nonce = this.nonceFor(url);
    const claims: Record<string, unknown> = {
      htm: method.toUpperCase(),
      htu: htuOf(url),
      jti: Buffer.from(this.randomBytes(16)).toString('base64url'),
    };
    if (nonce !== undefined) claims.nonce = nonce;
    if (accessToken !== undefined) {
      const digest = await webcrypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken));
      claims.ath = Buffer.from(digest).toString('base64url');
    }
    return new SignJWT(claims)
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
      .setIssuedAt(Math.floor(this.clock() / 1000))
      .sign(privateKey);
  }
}
