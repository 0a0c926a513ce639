/**
 * Wire formats as zod schemas. Unknown members pass through (RFC 8414 §3.2, RFC 9728 §3.2: clients
 * ignore what they do not understand); what the engine relies on is typed and checked.
 */
// Namespace import: lets bundlers drop zod's unused locales from the browser build.
import * as z from 'zod';

const nonEmpty = z.string().min(1);

/** RFC 9728 §2. `authorization_servers` must name at least one server for the document to be usable. */
export const ProtectedResourceMetadataSchema = z.looseObject({
  resource: nonEmpty,
  authorization_servers: z.array(nonEmpty).min(1).max(16),
  scopes_supported: z.array(z.string()).optional(),
  bearer_methods_supported: z.array(z.string()).optional(),
  resource_name: z.string().optional(),
});
export type ProtectedResourceMetadata = z.infer<typeof ProtectedResourceMetadataSchema>;

/** RFC 8414 §2 / OpenID Connect Discovery §3, with the fields the engine reads. */
export const AuthorizationServerMetadataSchema = z.looseObject({
  issuer: nonEmpty,
  authorization_endpoint: nonEmpty,
  token_endpoint: nonEmpty,
  registration_endpoint: nonEmpty.optional(),
  revocation_endpoint: nonEmpty.optional(),
  /** RFC 8628 §4. */
  device_authorization_endpoint: nonEmpty.optional(),
  scopes_supported: z.array(z.string()).optional(),
  response_types_supported: z.array(z.string()).optional(),
  grant_types_supported: z.array(z.string()).optional(),
  code_challenge_methods_supported: z.array(z.string()).optional(),
  token_endpoint_auth_methods_supported: z.array(z.string()).optional(),
  /** RFC 8414 §2: JWS algorithms the token endpoint accepts for `private_key_jwt` (C77); absent promises nothing. */
  token_endpoint_auth_signing_alg_values_supported: z.array(z.string()).optional(),
  authorization_response_iss_parameter_supported: z.boolean().optional(),
  client_id_metadata_document_supported: z.boolean().optional(),
  dpop_signing_alg_values_supported: z.array(z.string()).optional(),
});
export type AuthorizationServerMetadata = z.infer<typeof AuthorizationServerMetadataSchema>;

export const TokenEndpointAuthMethodSchema = z.enum(['none', 'client_secret_basic', 'client_secret_post']);

/** RFC 7591 §2 client metadata, as the application configures it. */
const clientMetadataShape = {
  redirect_uris: z.array(z.url()).min(1),
  client_name: z.string().min(1).optional(),
  client_uri: z.url().optional(),
  logo_uri: z.url().optional(),
  scope: z.string().optional(),
  grant_types: z.array(z.string()).optional(),
  response_types: z.array(z.string()).optional(),
  token_endpoint_auth_method: TokenEndpointAuthMethodSchema.optional(),
  application_type: z.enum(['native', 'web']).optional(),
  software_id: z.string().optional(),
  software_version: z.string().optional(),
};
/** Other RFC 7591 members (contacts, tos_uri…) pass through to the registration request untouched. */
export const ClientMetadataSchema = z.looseObject(clientMetadataShape);
const KnownClientMetadata = z.object(clientMetadataShape);
export type ClientMetadata = z.infer<typeof KnownClientMetadata>;

/** RFC 7591 §3.2.1 client information response. */
export const ClientInformationSchema = z.looseObject({
  client_id: nonEmpty,
  client_secret: nonEmpty.optional(),
  client_secret_expires_at: z.number().int().nonnegative().optional(),
  client_id_issued_at: z.number().optional(),
  token_endpoint_auth_method: z.string().optional(),
  redirect_uris: z.array(z.string()).optional(),
  grant_types: z.array(z.string()).optional(),
  scope: z.string().optional(),
});
export type ClientInformation = z.infer<typeof ClientInformationSchema>;

/** RFC 6749 §5.1. `expires_in` may arrive as a numeric string from some servers. */
export const TokenResponseSchema = z.looseObject({
  access_token: nonEmpty,
  token_type: nonEmpty,
  expires_in: z.union([z.number(), z.string().regex(/^\d{1,12}(\.\d{1,6})?$/)]).optional(),
  refresh_token: nonEmpty.optional(),
  scope: z.string().optional(),
});
export type TokenResponse = z.infer<typeof TokenResponseSchema>;

/** RFC 6749 §5.2 / RFC 7591 §3.2.2 error body. */
/** RFC 8628 §3.2. */
export const DeviceAuthorizationResponseSchema = z.looseObject({
  device_code: nonEmpty,
  user_code: nonEmpty,
  verification_uri: nonEmpty,
  verification_uri_complete: z.string().optional(),
  expires_in: z.number().positive().finite(),
  interval: z.number().int().nonnegative().max(3_600).optional(),
});

export const OAuthErrorBodySchema = z.looseObject({
  error: z.string().min(1).max(256),
  error_description: z.string().optional(),
  error_uri: z.string().optional(),
});
export type OAuthErrorBody = z.infer<typeof OAuthErrorBodySchema>;
