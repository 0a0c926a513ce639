/**
 * The user's part of an authorization, played over plain HTTP: it reads the authorization
 * server's HTML pages, fills the login form, answers the consent form, follows redirects with
 * cookies, and delivers the final redirect to the redirect URI (the session's loopback callback
 * server) as a browser would. Unlike the engine's headless user agent, which only walks redirects
 * of an auto-approving server, this one gets through a server that expects a person.
 *
 * One agent is one browser profile: its cookies outlive an authorization, so a second
 * authorization on the same agent finds the sign-in session, as a person's browser would.
 */
import { request, type Dispatcher } from 'undici';
import type { AuthorizationUrlOpener } from '../../src/adapters/options.js';
import { OAuthFlowError, quoteUntrusted } from '../../src/machines/errors.js';

export interface FormUser {
  username: string;
  password: string;
  /** The answer on the consent page; default 'allow'. */
  consent?: 'allow' | 'deny';
}

export interface FormUserAgentOptions {
  user: FormUser;
  /** Pages and redirects per authorization; default 20. */
  maxSteps?: number;
  /** For one whole authorization, delivery included; default 10 s. */
  deadlineMs?: number;
  /** Default true: GET the redirect URI so the loopback callback server receives it. */
  deliver?: boolean;
  /** Labels of the submit control that allows or denies on a consent page. */
  allowLabel?: RegExp;
  denyLabel?: RegExp;
  dispatcher?: Dispatcher;
}

export interface FormUserAgentRecord {
  /** Pages the user acted on, in order (`login`, `consent`). */
  pages: Array<'login' | 'consent'>;
  /** What came back to the redirect URI, without the code: `iss`, `error`, whether a code came. */
  responses: Array<{ iss: string | undefined; error: string | undefined; code: boolean }>;
  authorizations: number;
}

export interface FormUserAgent {
  authorize(authorizationUrl: string, redirectUri: string, signal?: AbortSignal): Promise<URLSearchParams>;
  /** As the session's `openAuthorizationUrl`. */
  opener(): AuthorizationUrlOpener;
  readonly record: FormUserAgentRecord;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const PAGE_LIMIT = 256 * 1024;
const TIMEOUT = Symbol('deadline');

interface Control {
  tag: 'input' | 'button';
  type: string;
  name: string | undefined;
  value: string;
  label: string;
  checked: boolean;
}

interface Form {
  action: string | undefined;
  method: string;
  controls: Control[];
}

interface Step {
  method: 'GET' | 'POST';
  url: URL;
  body?: string;
}

export function createFormUserAgent(options: FormUserAgentOptions): FormUserAgent {
  const maxSteps = options.maxSteps ?? 20;
  const deadlineMs = options.deadlineMs ?? 10_000;
  const deliver = options.deliver ?? true;
  const allowLabel = options.allowLabel ?? /^(allow|authorize|approve|accept|continue|yes)\b/i;
  const denyLabel = options.denyLabel ?? /^(deny|cancel|reject|decline|abort|no)\b/i;
  const jar = new CookieJar();
  const record: FormUserAgentRecord = { pages: [], responses: [], authorizations: 0 };

  async function authorize(authorizationUrl: string, redirectUri: string, signal?: AbortSignal): Promise<URLSearchParams> {
    const target = httpUrl(redirectUri, 'redirect URI');
    signal?.throwIfAborted();
    record.authorizations += 1;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(TIMEOUT), deadlineMs);
    const onAbort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });

    const send = async (step: Step): Promise<{ status: number; location: string | undefined; type: string; body: string }> => {
      const cookie = jar.header(step.url);
      const response = await request(step.url, {
        method: step.method,
        headers: {
          accept: 'text/html,application/xhtml+xml,*/*;q=0.8',
          'user-agent': 'mcp-oauth-form-agent',
          ...(cookie ? { cookie } : {}),
          ...(step.body === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded', origin: step.url.origin }),
        },
        ...(step.body === undefined ? {} : { body: step.body }),
        signal: controller.signal,
        ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
      });
      jar.store(step.url, response.headers['set-cookie']);
      const location = response.headers.location;
      const body = await readCapped(response.body, PAGE_LIMIT);
      return {
        status: response.statusCode,
        location: typeof location === 'string' ? location : undefined,
        type: String(response.headers['content-type'] ?? ''),
        body,
      };
    };

    let loginSubmitted = false;
    try {
      let step: Step = { method: 'GET', url: httpUrl(authorizationUrl, 'authorization URL') };
      for (let taken = 0; taken < maxSteps; taken++) {
        const response = await send(step);
        if (REDIRECTS.has(response.status) && response.location !== undefined) {
          const next = redirectTarget(response.location, step.url);
          if (sameEndpoint(next, target)) {
            next.hash = '';
            const params = new URLSearchParams(next.search);
            record.responses.push({ iss: params.get('iss') ?? undefined, error: params.get('error') ?? undefined, code: params.has('code') });
            if (deliver) await send({ method: 'GET', url: next });
            return params;
          }
          // A 307/308 after a form keeps its method and body; every other redirect becomes a GET.
          step = (response.status === 307 || response.status === 308) && step.method === 'POST' ? { ...step, url: next } : { method: 'GET', url: next };
          continue;
        }
        if (response.status !== 200 || !/^text\/html\b/i.test(response.type)) {
          throw new OAuthFlowError({
            code: 'useragent.unexpected_page',
            message: `the authorization server answered ${response.status} ${quoteUntrusted(response.type)}: ${quoteUntrusted(visibleText(response.body))}`,
            status: response.status,
          });
        }
        const forms = parseForms(response.body);
        const login = forms.find((form) => form.controls.some((c) => c.tag === 'input' && c.type === 'password'));
        if (login) {
          if (loginSubmitted) {
            throw new OAuthFlowError({ code: 'useragent.login_rejected', message: `the sign-in page came back after signing in: ${quoteUntrusted(visibleText(response.body))}` });
          }
          loginSubmitted = true;
          record.pages.push('login');
          step = submit(login, step.url, fillLogin(login, options.user), undefined);
          continue;
        }
        const wanted = (options.user.consent ?? 'allow') === 'allow' ? allowLabel : denyLabel;
        const choice = findSubmitter(forms, wanted);
        if (!choice) {
          throw new OAuthFlowError({
            code: 'useragent.no_form',
            message: `no sign-in form and no ${options.user.consent ?? 'allow'} button on the page: ${quoteUntrusted(visibleText(response.body))}`,
          });
        }
        record.pages.push('consent');
        step = submit(choice.form, step.url, fields(choice.form), choice.submitter);
      }
      throw new OAuthFlowError({ code: 'useragent.too_many_steps', message: `the authorization took more than ${maxSteps} pages and redirects` });
    } catch (error) {
      if (controller.signal.aborted) {
        if (controller.signal.reason === TIMEOUT) {
          throw new OAuthFlowError({ code: 'useragent.timeout', message: `the authorization did not complete within ${deadlineMs} ms` }, { cause: error });
        }
        throw signal?.reason ?? error;
      }
      if (error instanceof OAuthFlowError) throw error;
      throw new OAuthFlowError({ code: 'useragent.request_failed', message: 'a request of the form user agent failed' }, { cause: error });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  return {
    authorize,
    record,
    opener: () => async (url, { redirectUri, signal }) => {
      await authorize(url, redirectUri, signal);
    },
  };
}

// -------------------------------------------------------------------- forms

function fields(form: Form): Array<[string, string]> {
  return form.controls
    .filter((c) => c.tag === 'input' && c.name !== undefined && !['submit', 'button', 'image', 'reset', 'file'].includes(c.type))
    .filter((c) => (c.type === 'checkbox' || c.type === 'radio' ? c.checked : true))
    .map((c) => [c.name as string, c.value]);
}

function fillLogin(form: Form, user: FormUser): Array<[string, string]> {
  const identifier = form.controls.find((c) => c.tag === 'input' && c.name !== undefined && ['text', 'email'].includes(c.type));
  return fields(form).map(([name, value]) => {
    const control = form.controls.find((c) => c.name === name);
    if (control?.type === 'password') return [name, user.password];
    if (control === identifier) return [name, user.username];
    return [name, value];
  });
}

function findSubmitter(forms: Form[], label: RegExp): { form: Form; submitter: Control } | undefined {
  for (const form of forms) {
    const submitter = form.controls.find((c) => isSubmit(c) && label.test(c.label.trim()));
    if (submitter) return { form, submitter };
  }
  return undefined;
}

function isSubmit(control: Control): boolean {
  return control.tag === 'button' ? control.type === 'submit' : control.type === 'submit' || control.type === 'image';
}

function submit(form: Form, page: URL, values: Array<[string, string]>, submitter: Control | undefined): Step {
  const body = new URLSearchParams(values);
  if (submitter?.name !== undefined) body.append(submitter.name, submitter.value);
  const url = form.action === undefined || form.action === '' ? new URL(page) : redirectTarget(form.action, page);
  if (form.method === 'get') {
    url.search = body.toString();
    return { method: 'GET', url };
  }
  return { method: 'POST', url, body: body.toString() };
}

/** Enough HTML for forms written by servers: forms, inputs, buttons (with `form=` owners), entities. */
export function parseForms(page: string): Form[] {
  const forms: Array<Form & { id: string | undefined }> = [];
  const owned = new Map<string, Control[]>();
  const formPattern = /<form\b([^>]*)>([\s\S]*?)<\/form\s*>/gi;
  for (const match of page.matchAll(formPattern)) {
    const attributes = parseAttributes(match[1] ?? '');
    forms.push({
      id: attributes.get('id'),
      action: attributes.get('action'),
      method: (attributes.get('method') ?? 'get').toLowerCase(),
      controls: parseControls(match[2] ?? ''),
    });
  }
  // Buttons outside a form that name it with `form="id"` submit that form.
  const outside = page.replace(formPattern, '');
  for (const control of parseControls(outside, true)) {
    const owner = control.owner;
    if (owner === undefined) continue;
    owned.set(owner, [...(owned.get(owner) ?? []), control]);
  }
  return forms.map(({ id, ...form }) => ({ ...form, controls: [...form.controls, ...(id === undefined ? [] : owned.get(id) ?? [])] }));
}

function parseControls(fragment: string, ownedOnly = false): Array<Control & { owner?: string }> {
  const controls: Array<Control & { owner?: string }> = [];
  const pattern = /<input\b([^>]*)>|<button\b([^>]*)>([\s\S]*?)<\/button\s*>/gi;
  for (const match of fragment.matchAll(pattern)) {
    const isButton = match[2] !== undefined;
    const attributes = parseAttributes((isButton ? match[2] : match[1]) ?? '');
    const owner = attributes.get('form');
    if (ownedOnly && owner === undefined) continue;
    const type = (attributes.get('type') ?? (isButton ? 'submit' : 'text')).toLowerCase();
    const value = attributes.get('value') ?? (type === 'checkbox' || type === 'radio' ? 'on' : '');
    controls.push({
      tag: isButton ? 'button' : 'input',
      type,
      name: attributes.get('name'),
      value,
      label: isButton ? decodeEntities((match[3] ?? '').replace(/<[^>]*>/g, '')).trim() : value,
      checked: attributes.has('checked'),
      ...(owner === undefined ? {} : { owner }),
    });
  }
  return controls;
}

function parseAttributes(source: string): Map<string, string> {
  const attributes = new Map<string, string>();
  for (const match of source.matchAll(/([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g)) {
    const name = (match[1] ?? '').toLowerCase();
    if (!attributes.has(name)) attributes.set(name, decodeEntities(match[2] ?? match[3] ?? match[4] ?? ''));
  }
  return attributes;
}

const NAMED_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

function decodeEntities(value: string): string {
  return value.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, entity: string) => {
    if (entity[0] === '#') {
      const code = entity[1] === 'x' || entity[1] === 'X' ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[entity.toLowerCase()] ?? whole;
  });
}

/** A page's words, for an error message that says what the server showed instead of a form. */
function visibleText(page: string): string {
  const body = page.replace(/<(script|style|head)\b[\s\S]*?<\/\1\s*>/gi, ' ');
  return decodeEntities(body.replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim().slice(0, 200);
}

// -------------------------------------------------------------------- URLs and cookies

function httpUrl(value: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: `the ${what} is not a URL` });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: `the ${what} has scheme ${quoteUntrusted(url.protocol)}` });
  }
  return url;
}

function redirectTarget(location: string, base: URL): URL {
  let next: URL;
  try {
    next = new URL(location, base);
  } catch {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: 'a redirect or form target is not a URL' });
  }
  // A target could name file:, javascript: or an OS handler; a browser stand-in must not act on it.
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: `refusing to go to scheme ${quoteUntrusted(next.protocol)}` });
  }
  return next;
}

function sameEndpoint(a: URL, b: URL): boolean {
  return a.origin === b.origin && a.pathname === b.pathname;
}

async function readCapped(body: Dispatcher.ResponseData['body'], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > limit) {
      body.destroy();
      throw new OAuthFlowError({ code: 'useragent.page_too_large', message: `a page was larger than ${limit} bytes` });
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

interface Cookie {
  name: string;
  value: string;
  path: string;
}

/**
 * RFC 6265 in the parts servers here rely on: cookies belong to a host (not a port), are sent
 * on paths under their `Path`, and a `Max-Age<=0` or past `Expires` deletes them.
 */
class CookieJar {
  private readonly byHost = new Map<string, Cookie[]>();

  store(url: URL, setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return;
    const cookies = this.byHost.get(url.hostname) ?? [];
    this.byHost.set(url.hostname, cookies);
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair = '', ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = defaultPath(url);
      let expired = false;
      for (const attribute of attributes) {
        const [rawKey = '', ...rest] = attribute.split('=');
        const key = rawKey.trim().toLowerCase();
        const attributeValue = rest.join('=').trim();
        if (key === 'path' && attributeValue.startsWith('/')) path = attributeValue;
        if (key === 'max-age' && /^-?\d+$/.test(attributeValue) && Number(attributeValue) <= 0) expired = true;
        if (key === 'expires' && Date.parse(attributeValue) <= Date.now()) expired = true;
      }
      const index = cookies.findIndex((c) => c.name === name && c.path === path);
      if (index >= 0) cookies.splice(index, 1);
      if (!expired) cookies.push({ name, value, path });
    }
  }

  header(url: URL): string | undefined {
    const cookies = (this.byHost.get(url.hostname) ?? []).filter((c) => pathMatches(url.pathname, c.path));
    // Longer paths first, as RFC 6265 §5.4 orders them.
    cookies.sort((a, b) => b.path.length - a.path.length);
    return cookies.length === 0 ? undefined : cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

function defaultPath(url: URL): string {
  const slash = url.pathname.lastIndexOf('/');
  return slash <= 0 ? '/' : url.pathname.slice(0, slash);
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}
