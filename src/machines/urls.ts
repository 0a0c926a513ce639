/**
 * URL rules for discovery and for the requests the engine builds.
 *
 * Identity (is this the resource, is this the issuer) is decided on the raw string, split by hand:
 * the WHATWG parser re-serialises (adds a `/` path, drops `:443`, decodes `%2e`, maps IDN), and a
 * comparison done after that would accept values the specifications say are different.
 * The WHATWG `URL` global is only consulted as a second opinion, where what matters is what the
 * network stack will actually reach (origin, host classification, parseability).
 */

export interface RawUrl {
  scheme: string;
  authority: string;
  host: string;
  port: string;
  path: string;
  query: string | undefined;
  fragment: string | undefined;
}

function asciiLower(value: string): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    out += c >= 0x41 && c <= 0x5a ? String.fromCharCode(c + 0x20) : value[i];
  }
  return out;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHexDigit(c: number): boolean {
  return isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function hexValue(c: number): number {
  if (isDigit(c)) return c - 0x30;
  return (c | 0x20) - 0x61 + 10;
}

/**
 * Characters that make the raw split and the WHATWG parser disagree about where the host is
 * (`\` is a path separator to WHATWG; whitespace and controls are stripped by it), so a URL
 * holding them is refused rather than read two ways.
 */
export function isAmbiguousUrlCode(c: number): boolean {
  return c <= 0x20 || c === 0x7f || c === 0x5c;
}

function hasAmbiguousCharacter(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (isAmbiguousUrlCode(value.charCodeAt(i))) return true;
  return false;
}

/** Characters WHATWG forbids in a domain, plus `%`, whose decoding would make the raw host differ from the real one. */
function isForbiddenHostCode(c: number): boolean {
  return (
    c <= 0x20 ||
    c === 0x7f ||
    c === 0x23 || // #
    c === 0x25 || // %
    c === 0x2f || // /
    c === 0x3a || // :
    c === 0x3c || // <
    c === 0x3e || // >
    c === 0x3f || // ?
    c === 0x40 || // @
    c === 0x5b || // [
    c === 0x5c || // \
    c === 0x5d || // ]
    c === 0x5e || // ^
    c === 0x7c //   |
  );
}

interface Split extends RawUrl {
  userinfo: string | undefined;
  /** The authority after the host: `""` or `":"` followed by the port as written. */
  portPart: string;
}

function split(value: string): Split | undefined {
  if (typeof value !== 'string' || hasAmbiguousCharacter(value)) return undefined;
  const colon = value.indexOf(':');
  if (colon <= 0) return undefined;
  const scheme = value.slice(0, colon);
  const lowerScheme = asciiLower(scheme);
  if (lowerScheme !== 'http' && lowerScheme !== 'https') return undefined;
  if (!value.startsWith('//', colon + 1)) return undefined;

  const authorityStart = colon + 3;
  let authorityEnd = value.length;
  for (let i = authorityStart; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x2f || c === 0x3f || c === 0x23) {
      authorityEnd = i;
      break;
    }
  }
  const authority = value.slice(authorityStart, authorityEnd);

  const at = authority.lastIndexOf('@');
  const userinfo = at >= 0 ? authority.slice(0, at) : undefined;
  const hostPort = authority.slice(at + 1);

  let host: string;
  let portPart: string;
  if (hostPort.startsWith('[')) {
    const close = hostPort.indexOf(']');
    if (close < 0) return undefined;
    host = hostPort.slice(0, close + 1);
    for (let i = 1; i < close; i++) {
      const c = host.charCodeAt(i);
      if (!(isHexDigit(c) || c === 0x3a || c === 0x2e)) return undefined;
    }
    if (parseIPv6(host.slice(1, -1)) === undefined) return undefined;
    portPart = hostPort.slice(close + 1);
  } else {
    const portColon = hostPort.indexOf(':');
    host = portColon < 0 ? hostPort : hostPort.slice(0, portColon);
    portPart = portColon < 0 ? '' : hostPort.slice(portColon);
    for (let i = 0; i < host.length; i++) {
      if (isForbiddenHostCode(host.charCodeAt(i))) return undefined;
    }
  }
  if (host === '') return undefined;

  let port = '';
  if (portPart !== '') {
    if (portPart.charCodeAt(0) !== 0x3a) return undefined;
    port = portPart.slice(1);
    for (let i = 0; i < port.length; i++) {
      if (!isDigit(port.charCodeAt(i))) return undefined;
    }
    if (port !== '' && Number(port) > 65535) return undefined;
  }

  const rest = value.slice(authorityEnd);
  const hash = rest.indexOf('#');
  const fragment = hash >= 0 ? rest.slice(hash + 1) : undefined;
  const beforeHash = hash >= 0 ? rest.slice(0, hash) : rest;
  const question = beforeHash.indexOf('?');
  const query = question >= 0 ? beforeHash.slice(question + 1) : undefined;
  const path = question >= 0 ? beforeHash.slice(0, question) : beforeHash;

  return { scheme, authority, host, port, path, query, fragment, userinfo, portPart };
}

export function splitUrl(value: string): RawUrl | undefined {
  const s = split(value);
  if (s === undefined) return undefined;
  const { scheme, authority, host, port, path, query, fragment } = s;
  return { scheme, authority, host, port, path, query, fragment };
}

export function sameResource(a: string, b: string): boolean {
  const x = split(a);
  const y = split(b);
  if (x === undefined || y === undefined) return false;
  return (
    asciiLower(x.scheme) === asciiLower(y.scheme) &&
    x.userinfo === y.userinfo &&
    asciiLower(x.host) === asciiLower(y.host) &&
    x.portPart === y.portPart &&
    (x.path === '' ? '/' : x.path) === (y.path === '' ? '/' : y.path) &&
    x.query === y.query &&
    x.fragment === y.fragment
  );
}

function rawOrigin(s: Split): string {
  const port = s.port === '' ? '' : `:${s.port}`;
  return `${asciiLower(s.scheme)}://${asciiLower(s.host)}${port}`;
}

function requireSplit(value: string, what: string): Split {
  const s = split(value);
  if (s === undefined) throw new TypeError(`${what}: not an absolute http(s) URL`);
  return s;
}

/**
 * Userinfo is dropped with the fragment: the canonical URI is sent as `resource` to the
 * authorization server, and credentials embedded in the configured URL must not travel with it.
 */
export function canonicalServerUrl(serverUrl: string): string {
  const s = requireSplit(serverUrl, 'canonicalServerUrl');
  const query = s.query === undefined ? '' : `?${s.query}`;
  return `${asciiLower(s.scheme)}://${asciiLower(s.host)}${s.portPart}${s.path}${query}`;
}

export function originOf(url: string): string {
  return rawOrigin(requireSplit(url, 'originOf'));
}

/**
 * Both the raw origin and the WHATWG one must agree, so that a difference between the two
 * parsers (IDN mapping, legacy IPv4 forms) can never make two different servers look alike.
 */
export function sameOrigin(a: string, b: string): boolean {
  const x = split(a);
  const y = split(b);
  if (x === undefined || y === undefined) return false;
  if (rawOrigin(x) !== rawOrigin(y)) return false;
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

export type PrmSource = 'header' | 'path' | 'root';

export interface PrmCandidate {
  url: string;
  expectedResource: string;
  source: PrmSource;
}

/** The path with one terminating `/` removed, as RFC 9728 §3.1 and RFC 8414 §3.1 require before inserting. */
function withoutTerminatingSlash(path: string): string {
  return path.endsWith('/') ? path.slice(0, -1) : path;
}

/**
 * A header URL that is not an absolute http(s) URL (relative, garbage) is treated as absent so
 * discovery falls back to the well-known forms. Scheme, origin (policy 2) and network-class
 * (policy 6) checks on it are the caller's, since their outcome depends on options.
 * Returns [] when the server URL itself is not an absolute http(s) URL.
 */
export function protectedResourceMetadataCandidates(
  serverUrl: string,
  headerUrl?: string,
): PrmCandidate[] {
  const server = split(serverUrl);
  if (server === undefined) return [];
  const expected = canonicalServerUrl(serverUrl);
  const origin = rawOrigin(server);
  const candidates: PrmCandidate[] = [];
  const add = (candidate: PrmCandidate): void => {
    if (!candidates.some((c) => c.url === candidate.url)) candidates.push(candidate);
  };

  if (headerUrl !== undefined && split(headerUrl) !== undefined) {
    add({ url: headerUrl, expectedResource: expected, source: 'header' });
  }
  if (server.path !== '' && server.path !== '/') {
    add({
      url: `${origin}/.well-known/oauth-protected-resource${withoutTerminatingSlash(server.path)}`,
      expectedResource: expected,
      source: 'path',
    });
  }
  add({ url: `${origin}/.well-known/oauth-protected-resource`, expectedResource: origin, source: 'root' });
  return candidates;
}

export interface AsmCandidate {
  url: string;
  kind: 'oauth' | 'oidc';
}

/**
 * Returns [] for an issuer that cannot name metadata: not absolute http(s), or carrying userinfo,
 * a query or a fragment (RFC 8414 §2 forbids the last two).
 */
export function authorizationServerMetadataCandidates(issuer: string): AsmCandidate[] {
  const s = split(issuer);
  if (s === undefined || s.userinfo !== undefined || s.query !== undefined || s.fragment !== undefined) {
    return [];
  }
  const origin = rawOrigin(s);
  const path = withoutTerminatingSlash(s.path);
  if (path === '') {
    return [
      { url: `${origin}/.well-known/oauth-authorization-server`, kind: 'oauth' },
      { url: `${origin}/.well-known/openid-configuration`, kind: 'oidc' },
    ];
  }
  return [
    { url: `${origin}/.well-known/oauth-authorization-server${path}`, kind: 'oauth' },
    { url: `${origin}/.well-known/openid-configuration${path}`, kind: 'oidc' },
    { url: `${origin}${path}/.well-known/openid-configuration`, kind: 'oidc' },
  ];
}

export function legacyAuthorizationBase(serverUrl: string): {
  issuer: string;
  candidates: AsmCandidate[];
  authorizationEndpoint: string;
  tokenEndpoint: string;
  registrationEndpoint: string;
} {
  const origin = rawOrigin(requireSplit(serverUrl, 'legacyAuthorizationBase'));
  return {
    issuer: origin,
    candidates: [
      { url: `${origin}/.well-known/oauth-authorization-server`, kind: 'oauth' },
      { url: `${origin}/.well-known/openid-configuration`, kind: 'oidc' },
    ],
    authorizationEndpoint: `${origin}/authorize`,
    tokenEndpoint: `${origin}/token`,
    registrationEndpoint: `${origin}/register`,
  };
}

/** `.`/`..` as WHATWG sees them: it also treats `%2e` (either case) as a dot. */
function isDotSegment(segment: string): boolean {
  if (segment.length > 6) return false;
  const dots = asciiLower(segment).split('%2e').join('.');
  return dots === '.' || dots === '..';
}

/** RFC 3986 `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`. */
function isSchemeName(value: string): boolean {
  if (value === '') return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    const alpha = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    if (i === 0 ? !alpha : !(alpha || isDigit(c) || c === 0x2b || c === 0x2d || c === 0x2e)) return false;
  }
  return true;
}

export function clientIdMetadataUrlProblem(url: string): string | undefined {
  if (typeof url !== 'string') return 'invalid';
  const colon = url.indexOf(':');
  const scheme = colon > 0 ? url.slice(0, colon) : '';
  if (isSchemeName(scheme) && asciiLower(scheme) !== 'https') return 'not_https';
  const s = split(url);
  if (s === undefined) return 'invalid';
  try {
    new URL(url);
  } catch {
    return 'invalid';
  }
  if (s.userinfo !== undefined) return 'userinfo';
  if (s.fragment !== undefined) return 'fragment';
  if (s.path === '' || s.path === '/') return 'root_path';
  if (s.path.split('/').some(isDotSegment)) return 'dot_segment';
  if (s.query !== undefined) return 'query';
  return undefined;
}

export function isAllowedOAuthUrl(url: string): boolean {
  const s = split(url);
  if (s === undefined || s.userinfo !== undefined) return false;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  const scheme = asciiLower(s.scheme);
  if (scheme === 'https') return true;
  // Both readings of the host must be loopback: the raw one we checked and the one fetch will use.
  return classifyAddress(s.host) === 'loopback' && classifyAddress(parsed.hostname) === 'loopback';
}

function formDecode(value: string): string {
  const spaced = value.split('+').join(' ');
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

export function withQueryParams(
  endpoint: string,
  params: Record<string, string | undefined>,
): string | undefined {
  const s = split(endpoint);
  if (s === undefined || s.fragment !== undefined) return undefined;
  const existing = new Set<string>();
  if (s.query !== undefined) {
    for (const pair of s.query.split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      existing.add(formDecode(eq < 0 ? pair : pair.slice(0, eq)));
    }
  }
  const added = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    if (existing.has(name)) return undefined;
    added.append(name, value);
  }
  const encoded = added.toString();
  if (encoded === '') return endpoint;
  if (s.query === undefined) return `${endpoint}?${encoded}`;
  if (s.query === '' || s.query.endsWith('&')) return `${endpoint}${encoded}`;
  return `${endpoint}&${encoded}`;
}

export type NetworkClass = 'loopback' | 'private' | 'public';

/**
 * WHATWG IPv4 parsing, legacy forms included (`0177.0.0.1`, `0x7f.1`, `2130706433`, `127.1`),
 * because that is how a URL host is turned into an address before any connection is made.
 * `null` means "not an IPv4 address" (a name); `undefined` means "looks numeric but is invalid".
 */
function parseIPv4(host: string): number | null | undefined {
  const parts = host.split('.');
  if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  const last = parts[parts.length - 1] ?? '';
  if (!endsInNumber(last)) return null;
  if (parts.length > 4) return undefined;
  const numbers: number[] = [];
  for (const part of parts) {
    const n = parseIPv4Number(part);
    if (n === undefined) return undefined;
    numbers.push(n);
  }
  const lastNumber = numbers.pop() ?? 0;
  if (numbers.some((n) => n > 255)) return undefined;
  if (lastNumber >= 256 ** (5 - parts.length)) return undefined;
  let address = lastNumber;
  numbers.forEach((n, index) => {
    address += n * 256 ** (3 - index);
  });
  return address;
}

function endsInNumber(part: string): boolean {
  if (part === '') return false;
  let allDigits = true;
  for (let i = 0; i < part.length; i++) if (!isDigit(part.charCodeAt(i))) allDigits = false;
  if (allDigits) return true;
  if (part.length >= 2 && part[0] === '0' && (part[1] === 'x' || part[1] === 'X')) {
    for (let i = 2; i < part.length; i++) if (!isHexDigit(part.charCodeAt(i))) return false;
    return true;
  }
  return false;
}

function parseIPv4Number(part: string): number | undefined {
  if (part === '') return undefined;
  let radix = 10;
  let digits = part;
  if (part.length >= 2 && part[0] === '0' && (part[1] === 'x' || part[1] === 'X')) {
    radix = 16;
    digits = part.slice(2);
  } else if (part.length >= 2 && part[0] === '0') {
    radix = 8;
    digits = part.slice(1);
  }
  let value = 0;
  for (let i = 0; i < digits.length; i++) {
    const c = digits.charCodeAt(i);
    let d: number;
    if (radix === 16 && isHexDigit(c)) d = hexValue(c);
    else if (isDigit(c) && c - 0x30 < radix) d = c - 0x30;
    else return undefined;
    value = value * radix + d;
    // Past 2^32 the address is invalid anyway; stopping keeps the arithmetic exact.
    if (value > 0xffffffff) return undefined;
  }
  return value;
}

/** WHATWG IPv6 parsing into eight 16-bit pieces. */
function parseIPv6(input: string): number[] | undefined {
  const pieces = [0, 0, 0, 0, 0, 0, 0, 0];
  const n = input.length;
  const at = (k: number): number => (k < n ? input.charCodeAt(k) : -1);
  let pieceIndex = 0;
  let compress: number | undefined;
  let i = 0;
  if (at(0) === 0x3a) {
    if (at(1) !== 0x3a) return undefined;
    i = 2;
    pieceIndex = 1;
    compress = 1;
  }
  while (i < n) {
    if (pieceIndex === 8) return undefined;
    if (at(i) === 0x3a) {
      if (compress !== undefined) return undefined;
      i++;
      pieceIndex++;
      compress = pieceIndex;
      continue;
    }
    let value = 0;
    let length = 0;
    while (length < 4 && isHexDigit(at(i))) {
      value = value * 16 + hexValue(at(i));
      i++;
      length++;
    }
    if (at(i) === 0x2e) {
      if (length === 0) return undefined;
      i -= length;
      if (pieceIndex > 6) return undefined;
      let numbersSeen = 0;
      while (i < n) {
        let ipv4Piece: number | undefined;
        if (numbersSeen > 0) {
          if (at(i) === 0x2e && numbersSeen < 4) i++;
          else return undefined;
        }
        if (!isDigit(at(i))) return undefined;
        while (isDigit(at(i))) {
          const digit = at(i) - 0x30;
          if (ipv4Piece === undefined) ipv4Piece = digit;
          else if (ipv4Piece === 0) return undefined;
          else ipv4Piece = ipv4Piece * 10 + digit;
          if (ipv4Piece > 255) return undefined;
          i++;
        }
        pieces[pieceIndex] = (pieces[pieceIndex] ?? 0) * 0x100 + (ipv4Piece ?? 0);
        numbersSeen++;
        if (numbersSeen === 2 || numbersSeen === 4) pieceIndex++;
      }
      if (numbersSeen !== 4) return undefined;
      break;
    } else if (at(i) === 0x3a) {
      i++;
      if (i >= n) return undefined;
    } else if (i < n) {
      return undefined;
    }
    pieces[pieceIndex] = value;
    pieceIndex++;
  }
  if (compress !== undefined) {
    let swaps = pieceIndex - compress;
    pieceIndex = 7;
    while (pieceIndex !== 0 && swaps > 0) {
      const other = compress + swaps - 1;
      const tmp = pieces[pieceIndex] ?? 0;
      pieces[pieceIndex] = pieces[other] ?? 0;
      pieces[other] = tmp;
      pieceIndex--;
      swaps--;
    }
  } else if (pieceIndex !== 8) {
    return undefined;
  }
  return pieces;
}

function classifyIPv4(address: number): NetworkClass {
  const a = Math.floor(address / 0x1000000);
  const b = Math.floor(address / 0x10000) % 256;
  const c = Math.floor(address / 0x100) % 256;
  // 0.0.0.0 as a destination reaches the local host on Linux and macOS, so it is as internal as 127/8.
  if (address === 0) return 'loopback';
  if (a === 127) return 'loopback';
  if (a === 0 || a === 10) return 'private';
  if (a === 100 && b >= 64 && b < 128) return 'private';
  if (a === 169 && b === 254) return 'private';
  if (a === 172 && b >= 16 && b < 32) return 'private';
  if (a === 192 && b === 0 && (c === 0 || c === 2)) return 'private';
  if (a === 192 && b === 88 && c === 99) return 'private';
  if (a === 192 && b === 168) return 'private';
  if (a === 198 && (b === 18 || b === 19)) return 'private';
  if (a === 198 && b === 51 && c === 100) return 'private';
  if (a === 203 && b === 0 && c === 113) return 'private';
  if (a >= 224) return 'private';
  return 'public';
}

/** An IPv4 address carried inside IPv6 by a translation mechanism reaches at most its own class, never loopback. */
function embeddedClass(high: number, low: number): NetworkClass {
  return classifyIPv4(high * 0x10000 + low) === 'public' ? 'public' : 'private';
}

function classifyIPv6(p: number[]): NetworkClass {
  const [p0 = 0, p1 = 0, p2 = 0, p3 = 0, p4 = 0, p5 = 0, p6 = 0, p7 = 0] = p;
  const firstFiveZero = p0 === 0 && p1 === 0 && p2 === 0 && p3 === 0 && p4 === 0;
  if (firstFiveZero && p5 === 0xffff) return classifyIPv4(p6 * 0x10000 + p7);
  if (firstFiveZero && p5 === 0) {
    if (p6 === 0 && (p7 === 0 || p7 === 1)) return 'loopback';
    // IPv4-compatible (deprecated): never globally routed, but may be reached as the embedded v4.
    return classifyIPv4(p6 * 0x10000 + p7) === 'loopback' ? 'loopback' : 'private';
  }
  if (p0 === 0x64 && p1 === 0xff9b && p2 === 0 && p3 === 0 && p4 === 0 && p5 === 0) {
    return embeddedClass(p6, p7);
  }
  if (p0 === 0x2002) return embeddedClass(p1, p2);
  // Outside 2000::/3 (global unicast) everything is special: ULA, link-local, multicast, NAT64 local-use…
  if ((p0 & 0xe000) !== 0x2000) return 'private';
  if (p0 === 0x2001 && p1 < 0x200) return 'private';
  if (p0 === 0x2001 && p1 === 0xdb8) return 'private';
  if (p0 === 0x3fff && p1 < 0x1000) return 'private';
  return 'public';
}

function isLocalhostName(host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return name === 'localhost' || name.endsWith('.localhost');
}

function classifyAscii(host: string): NetworkClass | undefined {
  if (host.includes(':')) {
    const zone = host.indexOf('%');
    const pieces = parseIPv6(zone >= 0 ? host.slice(0, zone) : host);
    return pieces === undefined ? undefined : classifyIPv6(pieces);
  }
  const lower = asciiLower(host);
  if (isLocalhostName(lower)) return 'loopback';
  const ipv4 = parseIPv4(lower);
  if (ipv4 === null || ipv4 === undefined) return undefined;
  return classifyIPv4(ipv4);
}

/**
 * Takes a host as it appears in a URL (brackets allowed) or an address as a resolver returns it.
 * Pass the hostname, not `host:port`.
 */
export function classifyAddress(host: string): NetworkClass | undefined {
  if (typeof host !== 'string' || host === '') return undefined;
  let value = host;
  if (value.startsWith('[') || value.endsWith(']')) {
    if (!(value.startsWith('[') && value.endsWith(']'))) return undefined;
    value = value.slice(1, -1);
    if (!value.includes(':')) return undefined;
  }
  if (value.includes(':')) return classifyAscii(value);

  let needsWhatwg = false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c > 0x7e || c === 0x25) needsWhatwg = true;
  }
  if (!needsWhatwg) return classifyAscii(value);

  // Percent-escapes and non-ASCII (fullwidth digits, IDN) are mapped by the URL parser before the
  // connection is made, so the address is classified in the form the network will see.
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c <= 0x20 || c === 0x2f || c === 0x5c || c === 0x3f || c === 0x23 || c === 0x40) return undefined;
  }
  let hostname: string;
  try {
    hostname = new URL(`http://${value}/`).hostname;
  } catch {
    return undefined;
  }
  if (hostname.startsWith('[')) return classifyAscii(hostname.slice(1, -1));
  return classifyAscii(hostname);
}

const RANK: Record<NetworkClass, number> = { loopback: 0, private: 1, public: 2 };

export function networkClassAllowed(configured: NetworkClass, target: NetworkClass): boolean {
  return RANK[target] >= RANK[configured];
}
