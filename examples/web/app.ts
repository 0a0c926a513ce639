/**
 * The example web client: an MCP server URL, a full-page sign-in, the callback route, tools listed
 * and called through the MCP SDK's browser transport with the engine's fetch. Bundled by
 * examples/web/build.ts into dist/app.js.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createBrowserSession, OAuthFlowError, type BrowserSession } from '../../src/browser/index.js';

/** The server this tab is signing in to: the callback page is a new page load and must know it. */
const SERVER_KEY = 'mcp-web-example:server';
const CALLBACK_PATH = '/callback';

const byId = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element as T;
};

const ui = {
  form: byId<HTMLFormElement>('connect-form'),
  serverUrl: byId<HTMLInputElement>('server-url'),
  pending: byId<HTMLElement>('pending'),
  resume: byId<HTMLButtonElement>('resume'),
  startOver: byId<HTMLButtonElement>('start-over'),
  status: byId<HTMLElement>('status'),
  error: byId<HTMLElement>('error'),
  tools: byId<HTMLElement>('tools'),
  toolList: byId<HTMLUListElement>('tool-list'),
  callForm: byId<HTMLFormElement>('call-form'),
  echoText: byId<HTMLInputElement>('echo-text'),
  result: byId<HTMLElement>('result'),
  signOut: byId<HTMLButtonElement>('sign-out'),
  states: byId<HTMLOListElement>('states'),
};

function setStatus(status: string, text: string): void {
  ui.status.dataset.status = status;
  ui.status.textContent = text;
}

function showError(error: unknown): void {
  const code = error instanceof OAuthFlowError ? error.code : 'error';
  // Error messages of the engine carry no secrets; anything else is shown by its name only.
  const message = error instanceof OAuthFlowError ? error.message : error instanceof Error ? `${error.name}: ${error.message}` : 'unexpected failure';
  ui.error.dataset.code = code;
  ui.error.textContent = `${code}: ${message}`;
  ui.error.hidden = false;
}

function clearError(): void {
  ui.error.hidden = true;
  ui.error.dataset.code = '';
  ui.error.textContent = '';
}

let lastState = '';
function sessionFor(serverUrl: string): BrowserSession {
  return createBrowserSession({
    serverUrl,
    redirect: { uri: new URL(CALLBACK_PATH, location.origin).href },
    client: { metadata: { client_name: 'mcp-oauth web example' } },
    observe: (entry) => {
      if (entry.state === lastState) return;
      lastState = entry.state;
      const item = document.createElement('li');
      item.textContent = entry.state;
      ui.states.append(item);
    },
  });
}

let current: { serverUrl: string; session: BrowserSession; client?: Client } | undefined;

function sessionForUrl(serverUrl: string): BrowserSession {
  if (current?.serverUrl !== serverUrl) current = { serverUrl, session: sessionFor(serverUrl) };
  return current.session;
}

async function connect(serverUrl: string): Promise<void> {
  const session = sessionForUrl(serverUrl);
  setStatus('connecting', `Connecting to ${serverUrl}…`);
  const client = new Client({ name: 'mcp-oauth-web-example', version: '0.1.0' });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(serverUrl), { fetch: session.fetch }));
  } catch (error) {
    const cause = error instanceof OAuthFlowError ? error : (error as { cause?: unknown })?.cause;
    if (cause instanceof OAuthFlowError && cause.code === 'authorize.redirected') {
      setStatus('redirecting', 'Signing in at the authorization server…');
      return;
    }
    throw cause instanceof OAuthFlowError ? cause : error;
  }
  if (current) current.client = client;
  const { tools } = await client.listTools();
  ui.toolList.replaceChildren(
    ...tools.map((tool) => {
      const item = document.createElement('li');
      item.dataset.tool = tool.name;
      item.textContent = tool.description ? `${tool.name}: ${tool.description}` : tool.name;
      return item;
    }),
  );
  ui.tools.hidden = false;
  setStatus('connected', `Connected to ${serverUrl} (${tools.length} tools).`);
}

async function callEcho(): Promise<void> {
  const client = current?.client;
  if (!client) return;
  ui.result.dataset.tool = '';
  ui.result.textContent = '';
  const result = await client.callTool({ name: 'echo', arguments: { text: ui.echoText.value } });
  const content = Array.isArray(result.content) ? result.content : [];
  const text = content.map((part: { type?: string; text?: string }) => (part.type === 'text' ? part.text : `[${part.type}]`)).join('\n');
  ui.result.dataset.tool = 'echo';
  ui.result.textContent = text;
}

async function onCallbackRoute(serverUrl: string | null): Promise<void> {
  const href = location.href;
  // The code must not stay in the address bar or the history entry.
  history.replaceState(null, '', '/');
  if (!serverUrl) throw new OAuthFlowError({ code: 'callback.no_flow', message: 'no sign-in was started from this page' });
  ui.serverUrl.value = serverUrl;
  setStatus('finishing', 'Finishing sign-in…');
  await sessionForUrl(serverUrl).handleRedirectCallback(href);
  await connect(serverUrl);
}

function offerPendingSignIn(serverUrl: string): void {
  const session = sessionForUrl(serverUrl);
  if (!session.pendingAuthorization) return;
  ui.pending.hidden = false;
  setStatus('pending', 'A sign-in is waiting.');
  ui.resume.onclick = () => {
    ui.pending.hidden = true;
    setStatus('redirecting', 'Signing in at the authorization server…');
    session.resumeAuthorization();
  };
  ui.startOver.onclick = () => {
    session.cancelAuthorization();
    ui.pending.hidden = true;
    setStatus('idle', 'Not connected.');
  };
}

function wire(): void {
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    clearError();
    const serverUrl = ui.serverUrl.value.trim();
    localStorage.setItem(SERVER_KEY, serverUrl);
    connect(serverUrl).catch((error: unknown) => {
      setStatus('failed', 'Not connected.');
      showError(error);
    });
  });
  ui.callForm.addEventListener('submit', (event) => {
    event.preventDefault();
    clearError();
    callEcho().catch(showError);
  });
  ui.signOut.addEventListener('click', () => {
    clearError();
    const serverUrl = ui.serverUrl.value.trim();
    if (!serverUrl) return;
    sessionForUrl(serverUrl)
      .signOut()
      .then(() => {
        current = undefined;
        ui.tools.hidden = true;
        setStatus('idle', 'Stored credentials forgotten.');
      }, showError);
  });
}

async function main(): Promise<void> {
  wire();
  const serverUrl = localStorage.getItem(SERVER_KEY);
  if (serverUrl) ui.serverUrl.value = serverUrl;
  if (location.pathname === CALLBACK_PATH) {
    await onCallbackRoute(serverUrl).catch((error: unknown) => {
      setStatus('failed', 'Sign-in not finished.');
      // An ignored response (wrong state) leaves the genuine sign-in waiting: offer to continue it.
      if (serverUrl) offerPendingSignIn(serverUrl);
      showError(error);
    });
    return;
  }
  if (serverUrl) offerPendingSignIn(serverUrl);
  window.addEventListener('pageshow', (event) => {
    if (event.persisted && current) offerPendingSignIn(current.serverUrl);
  });
}

void main();
