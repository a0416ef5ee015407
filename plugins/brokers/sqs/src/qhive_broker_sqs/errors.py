"""The SQS broker's errors: botocore's turned into qhive's, naming the queue, the
endpoint, the credentials or the IAM permission at fault; and the error of a task
package too large for the queue.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import botocore.exceptions
from qhive.errors import BrokerConnectionError, BrokerError, QhiveError

from qhive_broker_sqs.options import SETTING

if TYPE_CHECKING:
    from qhive_broker_sqs.broker import SqsBroker

__all__ = ["MessageTooLarge", "aws_errors", "error_code", "error_of"]

#: How the broker names itself in errors.
PLUGIN = "SQS broker"

# Error codes, without the "AWS.SimpleQueueService." prefix of the query protocol.
MISSING_QUEUE = frozenset({"NonExistentQueue", "QueueDoesNotExist"})
BAD_CREDENTIALS = frozenset({
    "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "IncompleteSignature", "InvalidSignatureException", "InvalidAccessKeyId", "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure", "MissingAuthenticationToken", "InvalidSecurity",
})
DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_XML_ERROR = re.compile(
    r"<Code>(?P<code>[^<]*)</Code>(?:\s*<Message>(?P<message>[^<]*)</Message>)?")
PURGE_RUNNING = "PurgeQueueInProgress"
#: The IAM permission each call needs, for "access denied" messages.
PERMISSIONS = {
    "get_queue_url": "sqs:GetQueueUrl", "create_queue": "sqs:CreateQueue",
    "send_message": "sqs:SendMessage", "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage", "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes", "purge_queue": "sqs:PurgeQueue",
    "delete_queue": "sqs:DeleteQueue",
}


class MessageTooLarge(QhiveError, ValueError):
    """A task package is larger than the SQS queue takes; nothing was sent.

    :ivar size: the package's size in bytes; ``body``: as base64; ``limit``: the queue's.
    """

    def __init__(self, size: int, body: int, limit: int, queue: str,
                 task: Mapping[str, Any] | None = None) -> None:
        self.size, self.body, self.limit, self.queue, self.task = size, body, limit, queue, task
        what = "a task package"
        if task is not None:
            what = (f"task {task.get('name')!r} ({task.get('func')}, id {task.get('id')}): "
                    f"its package")
        super().__init__(
            f"{PLUGIN}: {what} of {size:,} bytes is {body:,} bytes in base64, over the "
            f"{limit:,}-byte limit of SQS queue {queue!r} (MaximumMessageSize); nothing was "
            f"sent. Set Q_CLUSTER['compress'] = True, or pass smaller arguments (e.g. the id "
            f"of a row or file that holds the data)")

    def for_task(self, task: Mapping[str, Any]) -> MessageTooLarge:
        return MessageTooLarge(self.size, self.body, self.limit, self.queue, task)


@contextlib.contextmanager
def aws_errors(broker: SqsBroker, what: str, op: str | None = None, *,
               passthrough: frozenset[str] = frozenset()) -> Iterator[None]:
    """Turn botocore's errors into qhive's, naming the queue, the endpoint, the
    credentials or the IAM permission at fault."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in passthrough:
            raise
        raise _client_error(broker, exc, what, op) from exc
    except (botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError) as exc:
        hint = (f"is {SETTING}['endpoint_url'] right and the service running?"
                if broker.options.endpoint_url else
                "is the way to AWS open from this host (network, proxy, VPC endpoint)?")
        client = broker._client  # its endpoint may come from $AWS_ENDPOINT_URL_SQS
        where = client.meta.endpoint_url if client is not None else broker.endpoint
        raise BrokerConnectionError(f"{PLUGIN}: {what} failed: cannot reach SQS at "
                                    f"{where} ({exc}); {hint}") from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise BrokerError(
            f"{PLUGIN}: {what} failed: no AWS credentials found: set {SETTING}"
            f"['aws_access_key_id'] and ['aws_secret_access_key'], or $AWS_ACCESS_KEY_ID "
            f"and $AWS_SECRET_ACCESS_KEY, or a profile (profile_name), or run with an "
            f"instance role") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise BrokerError(f"{PLUGIN}: {what} failed: {type(exc).__name__}: {exc}") from exc

def _client_error(broker: SqsBroker, exc: botocore.exceptions.ClientError, what: str,
                  op: str | None) -> BrokerError:
    code, message = error_of(exc)
    if code in BAD_CREDENTIALS:
        return BrokerConnectionError(
            f"{PLUGIN}: {what} failed: AWS refused the credentials ({code}: {message}); "
            f"used {broker.credentials()} — check them, or leave the keys out of {SETTING} "
            f"to use the environment, a profile or an instance role")
    if code in DENIED:
        permission = PERMISSIONS.get(op or "", "the SQS permission of this call")
        return BrokerError(
            f"{PLUGIN}: {what} failed: AWS denied {permission} on queue {broker.sqs_name!r} "
            f"to {broker.credentials()} ({message}); allow it in that identity's IAM policy")
    return BrokerError(f"{PLUGIN}: {what} failed on SQS queue {broker.sqs_name!r}: "
                       f"{code}: {message}")


def error_of(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    """(code, message) of an SQS error: the code without the query protocol's
    ``AWS.SimpleQueueService.`` prefix, the message on one line."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
    if "<Code>" in message:
        # An XML error body the JSON protocol left unparsed (a proxy's; moto's
        # authentication errors): its code and message are inside.
        found = _XML_ERROR.search(message)
        if found:
            code, message = found["code"], found["message"] or ""
    return code.removeprefix("AWS.SimpleQueueService."), " ".join(message.split())


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return error_of(exc)[0]
