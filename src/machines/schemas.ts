/**
 * Wire formats as zod schemas. Unknown members pass through (RFC 8414 §3.2, RFC 9728 §3.2: clients
 * ignore what they do not understand); what the engine relies on is typed and checked.
 */
// zod/mini: functional API (`z.optional(s)`, `s.check(z.minLength(1))`) that bundlers can
// tree-shake; the classic API pulls every method of every schema into the browser build
// (bench/README.md, "(h) core bundle"). Same core, same parsing; the adapters keep classic zod.
import * as z from 'zod/mini';

const nonEmpty = z.string().check(z.minLength(1));
// Schemas are immutable: sharing one instance between fields is safe.
const optionalString = z.optional(z.string());
const optionalStrings = z.optional(z.array(z.string()));

/** RFC 9728 §2. `authorization_servers` must name at least one server for the document to be usable. */
export const ProtectedResourceMetadataSchema = z.looseObject({
  resource: nonEmpty,
  authorization_servers: z.array(nonEmpty).check(z.minLength(1), z.maxLength(16)),
  scopes_supported: optionalStrings,
  bearer_methods_supported: optionalStrings,
  resource_name: optionalString,
});
export type ProtectedResourceMetadata = z.infer<typeof ProtectedResourceMetadataSchema>;

/** RFC 8414 §2 / OpenID Connect Discovery §3, with the fields the engine reads. */
export const AuthorizationServerMetadataSchema = z.looseObject({
  issuer: nonEmpty,
  authorization_endpoint: nonEmpty,
  token_endpoint: nonEmpty,
  registration_endpoint: z.optional(nonEmpty),
  revocation_endpoint: z.optional(nonEmpty),
  /** RFC 8628 §4. */
  device_authorization_endpoint: z.optional(nonEmpty),
  scopes_supported: optionalStrings,
  response_types_supported: optionalStrings,
  grant_types_supported: optionalStrings,
  code_challenge_methods_supported: optionalStrings,
  token_endpoint_auth_methods_supported: optionalStrings,
  /** RFC 8414 §2: JWS algorithms the token endpoint accepts for `private_key_jwt` (C77); absent promises nothing. */
  token_endpoint_auth_signing_alg_values_supported: optionalStrings,
  authorization_response_iss_parameter_supported: z.optional(z.boolean()),
  client_id_metadata_document_supported: z.optional(z.boolean()),
  dpop_signing_alg_values_supported: optionalStrings,
});
export type AuthorizationServerMetadata = z.infer<typeof AuthorizationServerMetadataSchema>;

export const TokenEndpointAuthMethodSchema = z.enum(['none', 'client_secret_basic', 'client_secret_post']);

/** RFC 7591 §2 client metadata, as the application configures it. */
const clientMetadataShape = {
  redirect_uris: z.array(z.url()).check(z.minLength(1)),
  client_name: z.optional(z.string().check(z.minLength(1))),
  client_uri: z.optional(z.url()),
  logo_uri: z.optional(z.url()),
  scope: optionalString,
  grant_types: optionalStrings,
  response_types: optionalStrings,
  token_endpoint_auth_method: z.optional(TokenEndpointAuthMethodSchema),
  application_type: z.optional(z.enum(['native', 'web'])),
  software_id: optionalString,
  software_version: optionalString,
};
/** Other RFC 7591 members (contacts, tos_uri…) pass through to the registration request untouched. */
export const ClientMetadataSchema = z.looseObject(clientMetadataShape);
/** The known members only (no index signature), as a type: no schema is built for it at runtime. */
export type ClientMetadata = z.infer<z.ZodMiniObject<typeof clientMetadataShape>>;

/** RFC 7591 §3.2.1 client information response. */
export const ClientInformationSchema = z.looseObject({
  client_id: nonEmpty,
  client_secret: z.optional(nonEmpty),
  // z.int(): a finite safe integer, as `z.number().int()` checks.
  client_secret_expires_at: z.optional(z.int().check(z.nonnegative())),
  client_id_issued_at: z.optional(z.number()),
  token_endpoint_auth_method: optionalString,
  redirect_uris: optionalStrings,
  grant_types: optionalStrings,
  scope: optionalString,
});
export type ClientInformation = z.infer<typeof ClientInformationSchema>;

/** RFC 6749 §5.1. `expires_in` may arrive as a numeric string from some servers. */
export const TokenResponseSchema = z.looseObject({
  access_token: nonEmpty,
  token_type: nonEmpty,
  expires_in: z.optional(z.union([z.number(), z.string().check(z.regex(/^\d{1,12}(\.\d{1,6})?$/))])),
  refresh_token: z.optional(nonEmpty),
  scope: optionalString,
});
export type TokenResponse = z.infer<typeof TokenResponseSchema>;

/** RFC 8628 §3.2. */
export const DeviceAuthorizationResponseSchema = z.looseObject({
  device_code: nonEmpty,
  user_code: nonEmpty,
  verification_uri: nonEmpty,
  verification_uri_complete: optionalString,
  // z.number() already rejects Infinity and NaN (classic `.finite()` was a no-op).
  expires_in: z.number().check(z.positive()),
  interval: z.optional(z.int().check(z.nonnegative(), z.maximum(3_600))),
});

/** RFC 6749 §5.2 / RFC 7591 §3.2.2 error body. */
export const OAuthErrorBodySchema = z.looseObject({
  error: z.string().check(z.minLength(1), z.maxLength(256)),
  error_description: optionalString,
  error_uri: optionalString,
});
export type OAuthErrorBody = z.infer<typeof OAuthErrorBodySchema>;
