/** Spec-strict defaults (DESIGN "Decisions already taken"); every deviation is a named option. */
import type { EnginePolicy } from './oauth.types.js';

export const DEFAULT_POLICY: EnginePolicy = {
  resourceMatch: 'exact',
  allowedMetadataOrigins: [],
  legacyFallback: true,
  pkceQuirkIssuers: [],
  allowUnadvertisedPkce: false,
  refreshSkewMs: 60_000,
  maxAuthorizations: 3,
  minTokenLifetimeSeconds: 1,
  maxTokenLifetimeSeconds: 366 * 24 * 3600,
  minDevicePollIntervalMs: 1_000,
  dpop: 'auto',
};
