"""Polyglot check: drives a live conversation-service through client.py.

Usage::

    HELPDESK_TOKEN=... python check.py --target 127.0.0.1:50051 \
        --stubs GENERATED_DIR --customer CUSTOMER_ID --user USER_ID

The token is read from the HELPDESK_TOKEN environment variable so that it
never shows up in a process list or a log. Exits non-zero (AssertionError or
grpc.RpcError) on the first thing that is not as expected.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--stubs", required=True, help="dir with generated stubs")
    parser.add_argument("--customer", required=True, help="customer id (workspace of the token)")
    parser.add_argument("--user", required=True, help="user id (workspace of the token)")
    args = parser.parse_args()

    token = os.environ.get("HELPDESK_TOKEN")
    assert token, "HELPDESK_TOKEN is not set"

    # client.py reads HELPDESK_STUBS_DIR when it is imported.
    os.environ["HELPDESK_STUBS_DIR"] = args.stubs
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import client  # noqa: E402

    import grpc

    with client.ConversationClient(args.target, token) as api:
        try:
            run(client, api, customer_id=args.customer, user_id=args.user)
        except grpc.RpcError as error:
            d = client.error_details(error)
            raise AssertionError(
                f"unexpected error {d.code.name}: {d.message} "
                f"(reason {d.reason!r}, violations {d.violations})"
            ) from error
    print("check.py: all assertions passed")
    return 0


def run(client, api, *, customer_id: str, user_id: str) -> None:
    pb = client.pb

    # --- Create ---------------------------------------------------------
    created = api.create(
        pb.Conversation(
            channel=pb.CHANNEL_EMAIL,
            customer_id=customer_id,
            subject="Printer on fire",
            priority=pb.PRIORITY_HIGH,
            tags=[" a ", "b", "a"],
            attributes={"order_id": "A-1001", "plan": "pro"},
        ),
        request_id=str(uuid.uuid4()),
    )
    assert is_uuid(created.id), f"create: id is not a UUID: {created.id!r}"
    assert created.channel == pb.CHANNEL_EMAIL, f"create: channel {created.channel}"
    assert created.customer_id == customer_id, f"create: customer_id {created.customer_id!r}"
    assert created.HasField("subject") and created.subject == "Printer on fire", (
        f"create: subject {created.subject!r}"
    )
    assert list(created.tags) == ["a", "b"], (
        f"create: tags should be trimmed and de-duplicated to ['a', 'b'], got {list(created.tags)}"
    )
    assert dict(created.attributes) == {"order_id": "A-1001", "plan": "pro"}, (
        f"create: attributes {dict(created.attributes)}"
    )
    assert created.status == pb.STATUS_OPEN, f"create: status should default to OPEN, got {created.status}"
    assert created.priority == pb.PRIORITY_HIGH, f"create: priority {created.priority}"
    assert not created.HasField("assignee_id"), "create: assignee_id should be null"
    assert created.assignee_type == pb.ASSIGNEE_TYPE_UNSPECIFIED, "create: assignee_type should be unset"
    assert created.HasField("created_at") and created.HasField("updated_at"), "create: timestamps missing"
    assert created.etag, "create: etag is empty"

    # --- Update: assign to a user -----------------------------------------
    assigned = api.update(
        pb.Conversation(id=created.id, assignee_id=user_id, assignee_type=pb.ASSIGNEE_TYPE_USER),
        ["assignee_id", "assignee_type"],
    )
    assert assigned.assignee_id == user_id, f"assign: assignee_id {assigned.assignee_id!r}"
    assert assigned.assignee_type == pb.ASSIGNEE_TYPE_USER, f"assign: assignee_type {assigned.assignee_type}"
    assert assigned.etag != created.etag, "assign: etag should change when the conversation changes"
    assert assigned.subject == "Printer on fire", "assign: subject should be untouched"
    assert assigned.priority == pb.PRIORITY_HIGH, "assign: priority should be untouched"

    # --- Update: reset priority and unassign (masked but unset) ------------
    unassigned = api.update(pb.Conversation(id=created.id), ["priority", "assignee_id"])
    assert unassigned.priority == pb.PRIORITY_NORMAL, (
        f"unassign: a masked, unset priority should reset to NORMAL, got {unassigned.priority}"
    )
    assert not unassigned.HasField("assignee_id"), (
        f"unassign: assignee_id should be null, got {unassigned.assignee_id!r}"
    )
    assert unassigned.assignee_type == pb.ASSIGNEE_TYPE_UNSPECIFIED, (
        f"unassign: clearing assignee_id should clear assignee_type, got {unassigned.assignee_type}"
    )
    assert unassigned.subject == "Printer on fire", "unassign: subject should be untouched"
    assert list(unassigned.tags) == ["a", "b"], "unassign: tags should be untouched"

    # --- Update: clear the subject ------------------------------------------
    cleared = api.update(pb.Conversation(id=created.id), ["subject"])
    assert not cleared.HasField("subject"), f"clear subject: subject should be null, got {cleared.subject!r}"
    assert cleared.etag != unassigned.etag, "clear subject: etag should change"

    # --- Get: the final state ------------------------------------------------
    got = api.get(created.id)
    assert got.id == created.id, f"get: id {got.id!r}"
    assert got.channel == pb.CHANNEL_EMAIL, f"get: channel {got.channel}"
    assert got.customer_id == customer_id, f"get: customer_id {got.customer_id!r}"
    assert not got.HasField("subject"), f"get: subject should be null, got {got.subject!r}"
    assert got.status == pb.STATUS_OPEN, f"get: status {got.status}"
    assert got.priority == pb.PRIORITY_NORMAL, f"get: priority {got.priority}"
    assert not got.HasField("assignee_id"), f"get: assignee_id should be null, got {got.assignee_id!r}"
    assert got.assignee_type == pb.ASSIGNEE_TYPE_UNSPECIFIED, f"get: assignee_type {got.assignee_type}"
    assert list(got.tags) == ["a", "b"], f"get: tags {list(got.tags)}"
    assert dict(got.attributes) == {"order_id": "A-1001", "plan": "pro"}, f"get: attributes {dict(got.attributes)}"
    assert got.created_at == created.created_at, "get: created_at changed"
    assert got.etag == cleared.etag, "get: etag differs from the last update's"
    assert got == cleared, "get: differs from what the last update returned"

    # --- Errors: INVALID_ARGUMENT with a BadRequest -------------------------
    error = expect_error(
        lambda: api.create(
            pb.Conversation(channel=pb.CHANNEL_EMAIL, customer_id=customer_id, subject="x" * 501)
        ),
        "create with a 501-character subject",
    )
    details = check_details(client, error)
    assert details.code.name == "INVALID_ARGUMENT", f"long subject: code {details.code}"
    assert details.reason == "INVALID_ARGUMENT", f"long subject: ErrorInfo reason {details.reason!r}"
    assert details.domain == "conversation-service", f"long subject: ErrorInfo domain {details.domain!r}"
    assert "conversation.subject" in details.violation_fields, (
        f"long subject: no violation on conversation.subject: {details.violations}"
    )

    # --- Errors: NOT_FOUND ---------------------------------------------------
    error = expect_error(lambda: api.get(str(uuid.uuid4())), "get of a random UUID")
    details = check_details(client, error)
    assert details.code.name == "NOT_FOUND", f"random id: code {details.code}"
    assert details.reason == "CONVERSATION_NOT_FOUND", f"random id: ErrorInfo reason {details.reason!r}"
    assert details.domain == "conversation-service", f"random id: ErrorInfo domain {details.domain!r}"
    assert not details.violations, f"random id: unexpected violations {details.violations}"


def expect_error(call, what: str):
    import grpc

    try:
        result = call()
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{what}: expected an error, got {result}")


def check_details(client, error):
    """Decodes the error's ErrorInfo and BadRequest details."""
    return client.error_details(error)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
