/** Scope selection (MCP "Scope Selection Strategy", SEP-835), offline access (SEP-2207) and step-up unions (SEP-2350). */

export function scopeList(scope: string | undefined): string[] {
  return (scope ?? '').split(' ').filter((token) => token.length > 0);
}

/** Union in first-seen order, so the scope string is stable for a given history. */
export function unionScopes(...scopes: Array<string | undefined>): string | undefined {
  const seen = new Set<string>();
  for (const scope of scopes) for (const token of scopeList(scope)) seen.add(token);
  return seen.size === 0 ? undefined : [...seen].join(' ');
}

/** True when `candidate` asks for something `held` does not already cover. */
export function addsScope(candidate: string | undefined, held: string | undefined): boolean {
  const granted = new Set(scopeList(held));
  return scopeList(candidate).some((token) => !granted.has(token));
}

export interface ScopeInputs {
  /** The challenge's `scope`: authoritative when present (MCP MUST). */
  challengeScope?: string;
  prmScopesSupported?: string[];
  asScopesSupported?: string[];
  /** The client registers the `refresh_token` grant, so asking for `offline_access` makes sense. */
  wantsRefreshTokens: boolean;
}

/** Challenge `scope`, else every PRM `scopes_supported`, else omitted; then `offline_access` if the AS lists it. */
export function selectScope(inputs: ScopeInputs): string | undefined {
  const base =
    inputs.challengeScope !== undefined && scopeList(inputs.challengeScope).length > 0
      ? unionScopes(inputs.challengeScope)
      : inputs.prmScopesSupported && inputs.prmScopesSupported.length > 0
        ? unionScopes(inputs.prmScopesSupported.join(' '))
        : undefined;
  return withOfflineAccess(base, inputs);
}

export function withOfflineAccess(scope: string | undefined, inputs: Pick<ScopeInputs, 'asScopesSupported' | 'wantsRefreshTokens'>): string | undefined {
  if (scope === undefined) return undefined;
  const offered = inputs.asScopesSupported?.includes('offline_access') ?? false;
  return offered && inputs.wantsRefreshTokens ? unionScopes(scope, 'offline_access') : scope;
}
