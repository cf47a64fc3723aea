// @ts-check
/**
 * Polyglot check: drives a live conversation-service through client.js.
 *
 *     HELPDESK_TOKEN=... node check.js --target 127.0.0.1:50051 \
 *         --customer CUSTOMER_ID --user USER_ID
 *
 * The token comes from HELPDESK_TOKEN so that it never shows up in a process
 * list or a log. Exits non-zero on the first thing that is not as expected.
 * Needs the generated code in ./gen (see client.js).
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { equals } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

import {
  AssigneeType,
  Channel,
  ConversationSchema,
  Priority,
  Status,
  connectConversations,
  errorDetails,
} from "./client.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const { values: args } = parseArgs({
  options: {
    target: { type: "string" },
    customer: { type: "string" },
    user: { type: "string" },
  },
});
const token = process.env.HELPDESK_TOKEN;
if (!args.target || !args.customer || !args.user || !token) {
  console.error("usage: HELPDESK_TOKEN=... node check.js --target HOST:PORT --customer ID --user ID");
  process.exit(2);
}
const api = connectConversations(`http://${args.target}`, token);

try {
  await run(api, args.customer, args.user);
  console.log("check.js: all assertions passed");
} catch (error) {
  // An assertion says what differed; an RPC error says what the server said.
  console.error(error instanceof ConnectError ? errorDetails(error) : error);
  process.exitCode = 1;
}

/**
 * @param {ReturnType<typeof connectConversations>} api
 * @param {string} customerId
 * @param {string} userId
 */
async function run(api, customerId, userId) {
  // --- Create ----------------------------------------------------------------
  const { conversation: created } = await api.createConversation({
    conversation: {
      channel: Channel.EMAIL,
      customerId,
      subject: "Printer on fire",
      priority: Priority.HIGH,
      tags: [" a ", "b", "a"],
      attributes: { order_id: "A-1001", plan: "pro" },
    },
    requestId: randomUUID(),
  });
  assert.ok(created, "create: no conversation in the response");
  assert.match(created.id, UUID, "create: id is not a UUID");
  assert.equal(created.channel, Channel.EMAIL, "create: channel");
  assert.equal(created.customerId, customerId, "create: customer_id");
  assert.equal(created.subject, "Printer on fire", "create: subject");
  assert.deepEqual(created.tags, ["a", "b"], "create: tags should be trimmed and de-duplicated");
  assert.deepEqual(created.attributes, { order_id: "A-1001", plan: "pro" }, "create: attributes");
  assert.equal(created.status, Status.OPEN, "create: status should default to OPEN");
  assert.equal(created.priority, Priority.HIGH, "create: priority");
  assert.equal(created.assigneeId, undefined, "create: assignee_id should be null");
  assert.equal(created.assigneeType, AssigneeType.UNSPECIFIED, "create: assignee_type should be unset");
  assert.ok(created.createdAt && created.updatedAt, "create: timestamps missing");
  assert.notEqual(created.etag, "", "create: etag is empty");

  // --- Update: assign to a user ----------------------------------------------
  const { conversation: assigned } = await api.updateConversation({
    conversation: { id: created.id, assigneeId: userId, assigneeType: AssigneeType.USER },
    updateMask: { paths: ["assignee_id", "assignee_type"] },
  });
  assert.ok(assigned, "assign: no conversation in the response");
  assert.equal(assigned.assigneeId, userId, "assign: assignee_id");
  assert.equal(assigned.assigneeType, AssigneeType.USER, "assign: assignee_type");
  assert.notEqual(assigned.etag, created.etag, "assign: etag should change");
  assert.equal(assigned.subject, "Printer on fire", "assign: subject should be untouched");
  assert.equal(assigned.priority, Priority.HIGH, "assign: priority should be untouched");

  // --- Update: clear by naming a field in the mask and leaving it unset ------
  // Unassigns (assignee_type is cleared with assignee_id), clears the subject
  // (null, not ""), and resets priority to NORMAL. Tags are not in the mask.
  const { conversation: cleared } = await api.updateConversation({
    conversation: { id: created.id },
    updateMask: { paths: ["assignee_id", "subject", "priority"] },
  });
  assert.ok(cleared, "clear: no conversation in the response");
  assert.equal(cleared.assigneeId, undefined, "clear: assignee_id should be null");
  assert.equal(cleared.assigneeType, AssigneeType.UNSPECIFIED, "clear: assignee_type should go with assignee_id");
  assert.equal(cleared.subject, undefined, "clear: subject should be null");
  assert.equal(cleared.priority, Priority.NORMAL, "clear: a masked, unset priority resets to NORMAL");
  assert.deepEqual(cleared.tags, ["a", "b"], "clear: tags should be untouched");
  assert.notEqual(cleared.etag, assigned.etag, "clear: etag should change");

  // --- Get: the final state --------------------------------------------------
  const { conversation: got } = await api.getConversation({ id: created.id });
  assert.ok(got, "get: no conversation in the response");
  assert.equal(got.id, created.id, "get: id");
  assert.equal(got.customerId, customerId, "get: customer_id");
  assert.equal(got.subject, undefined, "get: subject should be null");
  assert.equal(got.assigneeId, undefined, "get: assignee_id should be null");
  assert.equal(got.priority, Priority.NORMAL, "get: priority");
  assert.equal(got.status, Status.OPEN, "get: status");
  assert.deepEqual(got.attributes, { order_id: "A-1001", plan: "pro" }, "get: attributes");
  assert.ok(
    got.createdAt && created.createdAt && equals(TimestampSchema, got.createdAt, created.createdAt),
    "get: created_at changed",
  );
  assert.ok(equals(ConversationSchema, got, cleared), "get: differs from what the last update returned");

  // --- Errors: INVALID_ARGUMENT with a BadRequest ----------------------------
  let details = await expectError(
    api.createConversation({
      conversation: { channel: Channel.EMAIL, customerId, subject: "x".repeat(501) },
    }),
    "create with a 501-character subject",
  );
  assert.equal(details.code, "InvalidArgument", "long subject: code");
  assert.equal(details.reason, "INVALID_ARGUMENT", "long subject: ErrorInfo reason");
  assert.equal(details.domain, "conversation-service", "long subject: ErrorInfo domain");
  assert.deepEqual(
    details.violations.map((v) => v.field),
    ["conversation.subject"],
    "long subject: violations",
  );

  // A bad mask path: the violation names update_mask and quotes the path.
  details = await expectError(
    api.updateConversation({ conversation: { id: created.id }, updateMask: { paths: ["etag"] } }),
    "update with an output-only path",
  );
  assert.equal(details.code, "InvalidArgument", "mask etag: code");
  assert.equal(details.violations[0]?.field, "update_mask", "mask etag: violation field");
  assert.match(details.violations[0]?.description ?? "", /`etag`/, "mask etag: violation description");

  // --- Errors: NOT_FOUND -----------------------------------------------------
  details = await expectError(api.getConversation({ id: randomUUID() }), "get of a random UUID");
  assert.equal(details.code, "NotFound", "random id: code");
  assert.equal(details.reason, "CONVERSATION_NOT_FOUND", "random id: ErrorInfo reason");
  assert.deepEqual(details.violations, [], "random id: violations");
}

/**
 * @param {Promise<unknown>} call
 * @param {string} what
 */
async function expectError(call, what) {
  try {
    await call;
  } catch (error) {
    return errorDetails(error);
  }
  assert.fail(`${what}: expected an error, got a response`);
}
