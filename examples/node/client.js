// @ts-check
/**
 * A small Node client for helpdesk.v1.ConversationService (Connect for
 * Node, speaking plain gRPC over HTTP/2). Copy it into your project and adapt
 * it. It shows how to:
 *
 * - call the service with a bearer token (`connectConversations`),
 * - update with a FieldMask, where a named but unset field is cleared
 *   (see check.js),
 * - read the details every error carries (`errorDetails`): the ErrorInfo
 *   `reason` and, for INVALID_ARGUMENT, the BadRequest field violations.
 *
 * Generated code lives in ./gen and is not checked in. `make clients` (or
 * `npm run generate` here) regenerates it with `buf generate` and
 * protoc-gen-es, from proto/buf.gen.yaml. That also generates
 * google/rpc/error_details.proto, taken from the google-proto-files
 * package, so BadRequest and ErrorInfo come from the official definitions.
 *
 * Plain ESM with JSDoc types: Node runs it as is, and editors type-check it
 * against the generated .d.ts files.
 */

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BadRequestSchema,
  ErrorInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { ConversationService } from "./gen/helpdesk/v1/conversation_service_pb.js";

// The resource and its enums, so callers need only this module.
export * from "./gen/helpdesk/v1/conversation_pb.js";
export { ConversationService };

/**
 * An interceptor that adds `authorization: Bearer <token>` to every call.
 *
 * @param {string} token
 * @returns {import("@connectrpc/connect").Interceptor}
 */
export function bearerToken(token) {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

/**
 * A client for the service at `baseUrl` (e.g. "http://127.0.0.1:50051").
 * Calls take and return plain objects typed by the generated code:
 *
 *     const api = connectConversations("http://127.0.0.1:50051", token);
 *     const { conversation } = await api.getConversation({ id });
 *
 * @param {string} baseUrl
 * @param {string} token
 * @param {{ timeoutMs?: number }} [options]
 */
export function connectConversations(baseUrl, token, { timeoutMs = 10_000 } = {}) {
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [bearerToken(token)],
    defaultTimeoutMs: timeoutMs,
  });
  return createClient(ConversationService, transport);
}

/**
 * @typedef {object} ErrorDetails
 * @property {string} code        gRPC code name, e.g. "InvalidArgument"
 * @property {string} message     the server's message, without the code prefix
 * @property {string} reason      ErrorInfo.reason ("" if absent): branch on this
 * @property {string} domain      ErrorInfo.domain ("" if absent)
 * @property {{ [key: string]: string }} metadata  ErrorInfo.metadata
 * @property {{ field: string, description: string }[]} violations
 *   BadRequest field violations, in order
 */

/**
 * What a failed call said, in plain values. The details travel in the
 * `grpc-status-details-bin` trailer; ConnectError decodes it, and
 * `findDetails` unpacks the entries of the type it is given.
 *
 * @param {unknown} error what a call threw
 * @returns {ErrorDetails}
 */
export function errorDetails(error) {
  const err = ConnectError.from(error);
  const [info] = err.findDetails(ErrorInfoSchema);
  const violations = err
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) => badRequest.fieldViolations)
    .map(({ field, description }) => ({ field, description }));
  return {
    code: Code[err.code],
    message: err.rawMessage,
    reason: info?.reason ?? "",
    domain: info?.domain ?? "",
    metadata: info?.metadata ?? {},
    violations,
  };
}
