/** PKCE and `state` from WebCrypto: the page's own CSPRNG and SHA-256, nothing polyfilled. */

export type RandomBytes = (length: number) => Uint8Array;

export const webRandomBytes: RandomBytes = (length) => crypto.getRandomValues(new Uint8Array(length));

export function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** RFC 7636 §4.1/§4.2: 32 random octets give a 43-character verifier (256 bits); S256 challenge. */
export async function authorizationEntropy(randomBytes: RandomBytes = webRandomBytes): Promise<{ state: string; codeVerifier: string; codeChallenge: string }> {
  if (typeof crypto === 'undefined' || crypto.subtle === undefined) {
    // crypto.subtle exists only in secure contexts (https, or http on loopback).
    throw new Error('WebCrypto is unavailable: serve the page over https (or http on loopback)');
  }
  const codeVerifier = base64url(randomBytes(32));
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(codeVerifier));
  return { state: base64url(randomBytes(32)), codeVerifier, codeChallenge: base64url(new Uint8Array(digest)) };
}
