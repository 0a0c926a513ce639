import { afterEach, describe, expect, it } from 'vitest';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { headlessOpener, rpc, startDeployment, type Deployment } from '../support/deployment.js';

let deployment: Deployment | undefined;
const sessions: OAuthSession[] = [];

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close();
  await deployment?.close();
  deployment = undefined;
});

function track(session: OAuthSession): OAuthSession {
  sessions.push(session);
  return session;
}

describe('cold flow', () => {
  it('runs discovery, registration, authorization and exchange in exactly 7 requests', async () => {
    deployment = await startDeployment();
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: deployment.mcp.url, openAuthorizationUrl: headlessOpener(opened) }));
    const response = await session.fetch(deployment.mcp.url, rpc('tools/list'));
    expect(response.status).toBe(200);
    const body = await response.text();
    expect(body).toContain('echo');
    expect(deployment.totalRequests()).toBe(7);
    expect(opened.opened).toBe(1);
    expect(session.state).toBe('ready.authorized');
  });
});
