/** Entropy and hashing for the authorization request: the machine receives them as event data. */
import { webcrypto } from 'node:crypto';

export type RandomBytes = (length: number) => Uint8Array;

export const systemRandomBytes: RandomBytes = (length) => webcrypto.getRandomValues(new Uint8Array(length));

export function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** RFC 7636 §4.1/§4.2: 32 random octets give a 43-character verifier (256 bits); S256 challenge. */
export async function pkcePair(randomBytes: RandomBytes): Promise<{ codeVerifier: string; codeChallenge: string }> {
  const codeVerifier = base64url(randomBytes(32));
  const digest = await webcrypto.subtle.digest('SHA-256', new TextEncoder().encode(codeVerifier));
  return { codeVerifier, codeChallenge: base64url(new Uint8Array(digest)) };
}

export async function authorizationEntropy(randomBytes: RandomBytes): Promise<{ state: string; codeVerifier: string; codeChallenge: string }> {
  const pkce = await pkcePair(randomBytes);
  return { state: base64url(randomBytes(32)), ...pkce };
}
