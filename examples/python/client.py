"""A small Python client for helpdesk.v1.ConversationService.

Copy this module into your project and adapt it. It shows how to:

* call the service with a bearer token (``ConversationClient``),
* update a conversation with a FieldMask (``ConversationClient.update``),
* read the structured error details the service attaches to every failed
  call (``error_details``): the ErrorInfo ``reason`` and, for
  INVALID_ARGUMENT, the BadRequest field violations.

Generated stubs
---------------
The protobuf/gRPC stubs are not checked in. Generate them with::

    python -m grpc_tools.protoc -I proto \
        --python_out=OUT --grpc_python_out=OUT proto/helpdesk/v1/*.proto

and either put OUT on ``sys.path`` yourself or set ``HELPDESK_STUBS_DIR=OUT``
before importing this module.

Error details
-------------
Errors are ``google.rpc.Status`` messages carried in the
``grpc-status-details-bin`` trailing metadata; ``grpcio-status`` (which
brings ``googleapis-common-protos``) decodes them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import grpc
from google.protobuf import field_mask_pb2

_stubs_dir = os.environ.get("HELPDESK_STUBS_DIR")
if _stubs_dir and _stubs_dir not in sys.path:
    sys.path.insert(0, _stubs_dir)

from helpdesk.v1 import conversation_pb2 as pb  # noqa: E402
from helpdesk.v1 import conversation_service_pb2 as service_pb  # noqa: E402
from helpdesk.v1 import conversation_service_pb2_grpc as service_grpc  # noqa: E402

from google.rpc import error_details_pb2  # noqa: E402  (googleapis-common-protos)
from grpc_status import rpc_status  # noqa: E402  (grpcio-status)

__all__ = [
    "pb",
    "ConversationClient",
    "ErrorDetails",
    "error_details",
]


class ConversationClient:
    """A thin wrapper around the generated stub that adds the token.

    Use it as a context manager so the channel is closed::

        with ConversationClient("127.0.0.1:50051", token) as client:
            conversation = client.get(conversation_id)
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        timeout: float = 10.0,
        credentials: Optional[grpc.ChannelCredentials] = None,
    ) -> None:
        if credentials is None:
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, credentials)
        self._stub = service_grpc.ConversationServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    def __enter__(self) -> "ConversationClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def create(
        self, conversation: pb.Conversation, *, request_id: str = ""
    ) -> pb.Conversation:
        """Creates a conversation and returns it as stored.

        Pass a UUID as ``request_id`` to make retries safe.
        """
        request = service_pb.CreateConversationRequest(
            conversation=conversation, request_id=request_id
        )
        response = self._stub.CreateConversation(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.conversation

    def update(
        self, conversation: pb.Conversation, paths: Sequence[str]
    ) -> pb.Conversation:
        """Writes the fields named by ``paths`` and returns the result.

        ``conversation.id`` names the conversation. A path whose field is
        left unset in ``conversation`` resets that field (null, default or
        empty): e.g. ``update(Conversation(id=...), ["assignee_id"])``
        unassigns. A non-empty ``conversation.etag`` is a precondition
        (ABORTED if the conversation changed meanwhile).
        """
        request = service_pb.UpdateConversationRequest(
            conversation=conversation,
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        )
        response = self._stub.UpdateConversation(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.conversation

    def get(self, conversation_id: str) -> pb.Conversation:
        """Returns one conversation (NOT_FOUND if it does not exist)."""
        request = service_pb.GetConversationRequest(id=conversation_id)
        response = self._stub.GetConversation(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return response.conversation


# --------------------------------------------------------------------------
# Error details
# --------------------------------------------------------------------------


@dataclass
class ErrorDetails:
    """What a failed call said, in plain Python values."""

    code: grpc.StatusCode
    message: str
    # From google.rpc.ErrorInfo (empty strings if the error had none).
    reason: str = ""
    domain: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)
    # From google.rpc.BadRequest: (field, description) pairs, in order.
    violations: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def violation_fields(self) -> List[str]:
        return [name for name, _ in self.violations]


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Extracts the ErrorInfo reason and BadRequest violations of an error.

    ``error`` is what a call on the stub raised (a ``grpc.RpcError`` that is
    also a ``grpc.Call``).
    """
    details = ErrorDetails(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)
    if status is None:
        return details
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            details.reason = info.reason
            details.domain = info.domain
            details.metadata = dict(info.metadata)
        elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            any_detail.Unpack(bad_request)
            details.violations.extend(
                (v.field, v.description) for v in bad_request.field_violations
            )
    return details
