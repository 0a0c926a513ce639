/**
 * `WWW-Authenticate` (RFC 9110 §11.6.1) as a single forward walk over the field value.
 *
 * The value comes from a server we do not trust yet, and one of its parameters
 * (`resource_metadata`) decides where discovery goes next. So the parser never guesses: a
 * challenge with anything it cannot read exactly is dropped whole, and a parameter is only ever
 * read at a position the grammar allows one, never found by searching inside another value.
 * No regular expressions: each character is looked at a bounded number of times, so a hostile
 * header costs linear time.
 */

export interface Challenge {
  /** Lower-cased auth-scheme. */
  scheme: string;
  /** Lower-cased parameter names; quoted-string values with quoted-pair escapes resolved. */
  params: Record<string, string>;
  token68?: string;
}

export interface BearerChallenge {
  scheme: 'bearer' | 'dpop';
  resourceMetadata?: string;
  scope?: string;
  error?: string;
  errorDescription?: string;
  algs?: string;
}

/**
 * Longer values are refused outright rather than cut: a cut could end inside a token value and
 * turn `scope=files:write_all` into a shorter, well-formed `scope=files:wr` the server never sent.
 * No real server needs 16 KiB of challenges, so refusing costs nothing legitimate.
 */
export const MAX_WWW_AUTHENTICATE_LENGTH = 16 * 1024;

const SP = 0x20;
const HTAB = 0x09;
const DQUOTE = 0x22;
const COMMA = 0x2c;
const EQUALS = 0x3d;
const BACKSLASH = 0x5c;

function table(chars: string): Uint8Array {
  const t = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  return t;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const TCHAR = table(`${ALNUM}!#$%&'*+-.^_\`|~`);
const TOKEN68 = table(`${ALNUM}-._~+/`);

function inTable(t: Uint8Array, c: number): boolean {
  return c < 128 && t[c] === 1;
}

type Element =
  | { kind: 'empty' }
  | { kind: 'scheme'; scheme: string }
  | { kind: 'token68'; scheme: string; token68: string }
  | { kind: 'schemeParam'; scheme: string; name: string; value: string }
  | { kind: 'param'; name: string; value: string }
  /** `startsChallenge`: it began as `scheme SP …`, so it replaces the current challenge instead of spoiling it. */
  | { kind: 'malformed'; startsChallenge: boolean };

class Walker {
  private i = 0;
  private readonly n: number;

  constructor(private readonly s: string) {
    this.n = s.length;
  }

  private code(): number {
    return this.i < this.n ? this.s.charCodeAt(this.i) : -1;
  }

  private skipWhitespace(): void {
    let c = this.code();
    while (c === SP || c === HTAB) {
      this.i++;
      c = this.code();
    }
  }

  private readToken(): string {
    const start = this.i;
    while (inTable(TCHAR, this.code())) this.i++;
    return this.s.slice(start, this.i);
  }

  /**
   * Always consumes through the closing quote (or to the end), even when the content is invalid,
   * so that the caller's resynchronisation starts outside the string and not inside it.
   */
  private readQuoted(): string | undefined {
    this.i++;
    let out = '';
    let segment = this.i;
    let valid = true;
    while (this.i < this.n) {
      const c = this.s.charCodeAt(this.i);
      if (c === DQUOTE) {
        out += this.s.slice(segment, this.i);
        this.i++;
        return valid ? out : undefined;
      }
      if (c === BACKSLASH) {
        out += this.s.slice(segment, this.i);
        this.i++;
        if (this.i >= this.n) return undefined;
        const escaped = this.s.charCodeAt(this.i);
        if (!(escaped === HTAB || (escaped >= 0x20 && escaped !== 0x7f))) valid = false;
        segment = this.i;
        this.i++;
        continue;
      }
      // qdtext excludes controls: a CR/LF/NUL in a value is a header-injection attempt, not text.
      if (!(c === HTAB || (c >= 0x20 && c !== 0x7f))) valid = false;
      this.i++;
    }
    return undefined;
  }

  private readValue(): string | undefined {
    if (this.code() === DQUOTE) return this.readQuoted();
    const token = this.readToken();
    return token === '' ? undefined : token;
  }

  /** True (and past the comma) when only whitespace remains before the next list separator. */
  private atElementEnd(): boolean {
    this.skipWhitespace();
    if (this.i >= this.n) return true;
    if (this.code() === COMMA) {
      this.i++;
      return true;
    }
    return false;
  }

  private skipToNextElement(): void {
    while (this.i < this.n) {
      const c = this.s.charCodeAt(this.i);
      if (c === COMMA) {
        this.i++;
        return;
      }
      if (c === DQUOTE) this.readQuoted();
      else this.i++;
    }
  }

  private malformed(startsChallenge: boolean): Element {
    this.skipToNextElement();
    return { kind: 'malformed', startsChallenge };
  }

  /** One list element, or undefined at the end of the value. */
  next(): Element | undefined {
    this.skipWhitespace();
    if (this.i >= this.n) return undefined;
    if (this.code() === COMMA) {
      this.i++;
      return { kind: 'empty' };
    }

    const first = this.readToken();
    if (first === '') return this.malformed(false);
    const afterFirst = this.i;
    this.skipWhitespace();

    if (this.i >= this.n || this.code() === COMMA) {
      if (this.i < this.n) this.i++;
      return { kind: 'scheme', scheme: first.toLowerCase() };
    }

    if (this.code() === EQUALS) {
      this.i++;
      this.skipWhitespace();
      const value = this.readValue();
      if (value === undefined || !this.atElementEnd()) return this.malformed(false);
      return { kind: 'param', name: first.toLowerCase(), value };
    }

    // RFC 9110 requires 1*SP between the scheme and what follows it.
    if (this.i === afterFirst) return this.malformed(false);
    const scheme = first.toLowerCase();

    // token68 and `name=value` share a prefix; token68 is only taken when its trailing `=`
    // padding is followed by the end of the element, so `realm="x"` is never read as one.
    const rest = this.i;
    while (inTable(TOKEN68, this.code())) this.i++;
    if (this.i > rest) {
      while (this.code() === EQUALS) this.i++;
      const end = this.i;
      if (this.atElementEnd()) {
        return { kind: 'token68', scheme, token68: this.s.slice(rest, end) };
      }
    }
    this.i = rest;

    const name = this.readToken();
    if (name === '') return this.malformed(true);
    this.skipWhitespace();
    if (this.code() !== EQUALS) return this.malformed(true);
    this.i++;
    this.skipWhitespace();
    const value = this.readValue();
    if (value === undefined || !this.atElementEnd()) return this.malformed(true);
    return { kind: 'schemeParam', scheme, name: name.toLowerCase(), value };
  }
}

interface Building {
  challenge: Challenge;
  broken: boolean;
}

function newChallenge(scheme: string, broken = false): Building {
  // No prototype: a parameter named `__proto__` or `constructor` must stay a plain entry.
  const params = Object.create(null) as Record<string, string>;
  return { challenge: { scheme, params }, broken };
}

function addParam(building: Building, name: string, value: string): void {
  const { challenge } = building;
  // A repeated name is ambiguous (which one did the server mean?), so the challenge is dropped.
  if (challenge.token68 !== undefined || Object.hasOwn(challenge.params, name)) {
    building.broken = true;
    return;
  }
  challenge.params[name] = value;
}

export function parseWWWAuthenticate(header: string): Challenge[] {
  if (typeof header !== 'string' || header.length > MAX_WWW_AUTHENTICATE_LENGTH) return [];
  const walker = new Walker(header);
  const challenges: Challenge[] = [];
  let current: Building | undefined;

  const finish = (): void => {
    if (current !== undefined && !current.broken) challenges.push(current.challenge);
    current = undefined;
  };

  for (let element = walker.next(); element !== undefined; element = walker.next()) {
    switch (element.kind) {
      case 'empty':
        break;
      case 'scheme':
        finish();
        current = newChallenge(element.scheme);
        break;
      case 'token68':
        finish();
        current = newChallenge(element.scheme);
        current.challenge.token68 = element.token68;
        break;
      case 'schemeParam':
        finish();
        current = newChallenge(element.scheme);
        addParam(current, element.name, element.value);
        break;
      case 'param':
        // A parameter before any scheme belongs to no challenge and is ignored.
        if (current !== undefined) addParam(current, element.name, element.value);
        break;
      case 'malformed':
        if (element.startsChallenge) {
          finish();
          current = newChallenge('', true);
        } else if (current !== undefined) {
          current.broken = true;
        }
        break;
    }
  }
  finish();
  return challenges;
}

export function readBearerChallenge(
  header: string | string[] | undefined | null,
): BearerChallenge | undefined {
  if (header === undefined || header === null) return undefined;
  const lines = typeof header === 'string' ? [header] : header;
  let total = 0;
  for (const line of lines) {
    if (typeof line !== 'string') return undefined;
    total += line.length;
  }
  if (total > MAX_WWW_AUTHENTICATE_LENGTH) return undefined;

  // Each field line is parsed on its own so that a broken line (an unterminated quote) cannot
  // swallow the challenges of the next one, as it would if the lines were joined first.
  const challenges = lines.flatMap((line) => parseWWWAuthenticate(line));
  const chosen =
    challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'dpop');
  if (chosen === undefined) return undefined;

  const result: BearerChallenge = { scheme: chosen.scheme as 'bearer' | 'dpop' };
  const p = chosen.params;
  if (p.resource_metadata !== undefined) result.resourceMetadata = p.resource_metadata;
  if (p.scope !== undefined) result.scope = p.scope;
  if (p.error !== undefined) result.error = p.error;
  if (p.error_description !== undefined) result.errorDescription = p.error_description;
  if (p.algs !== undefined) result.algs = p.algs;
  return result;
}
