"""An agent-inbox plugin in Python: it refuses a message whose payload lacks a field the route
requires, or has it with the wrong JSON type, so the sender learns at once instead of the agent
failing minutes later.

The route's `plugin_config` names the fields and their types:

    [routes.tasks.plugin_config]
    required = { title = "string", priority = "integer" }

Types: "string", "number", "integer", "boolean", "object", "array".

componentize-py generates the `wit_world` package from `wit/plugin.wit` at build time: an
exported interface becomes a class to implement (`hooks` is `Hooks`), and WIT names turn into
snake_case (`check-message` is `check_message`, `msg-type` is `msg_type`).
"""

import json

from wit_world import exports
from wit_world.imports.types import (
    Message,
    MessageVerdict,
    MessageVerdict_Accept,
    MessageVerdict_Reject,
    Rejection,
    Reply,
    ReplyContext,
    ReplyVerdict,
    ReplyVerdict_Accept,
)

# Payloads longer than this are refused before parsing: the whole call must fit the route's memory
# cap and deadline. The host's default `max_body_bytes` is 256 KiB, so this rarely bites.
MAX_PAYLOAD_CHARS = 256 * 1024

# What each type name in the config accepts. `bool` is a subclass of `int` in Python, so the
# number types leave booleans out explicitly.
TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


class Hooks(exports.Hooks):
    """The three hooks of `wit/plugin.wit`'s `hooks` interface."""

    def check_message(self, message: Message, config: str) -> MessageVerdict:
        """Runs on `POST /message` before the ack: accept, or reject with a 4xx and a reason."""
        # A broken config raises, which traps: the host reports the plugin as failed, with the
        # exception on its log, instead of blaming the sender.
        required = json.loads(config).get("required", {})
        if len(message.payload) > MAX_PAYLOAD_CHARS:
            return reject(413, f"payload is over {MAX_PAYLOAD_CHARS} characters")
        try:
            payload = json.loads(message.payload)
        except (ValueError, RecursionError):
            return reject(400, "payload is not valid JSON")
        if not isinstance(payload, dict):
            return reject(422, "payload must be a JSON object")

        problems = []
        for field, kind in required.items():
            if field not in payload:
                problems.append(f"missing field `{field}` ({kind})")
            elif not TYPES[kind](payload[field]):
                problems.append(f"field `{field}` must be of type {kind}")
        if problems:
            return reject(422, "; ".join(problems))
        return MessageVerdict_Accept()

    def render_turn(self, message: Message, reply: ReplyContext, config: str) -> str | None:
        """Runs before the agent starts; `None` keeps the host's built-in text."""
        return None

    def check_reply(
        self, message: Message, reply: Reply, reply_to: list[str], config: str
    ) -> ReplyVerdict:
        """Runs on `POST /send`; this plugin relays every reply as it is."""
        return ReplyVerdict_Accept()


def reject(status: int, reason: str) -> MessageVerdict:
    """A refusal: the sender gets `status` with `plugin_rejected` and `reason`."""
    return MessageVerdict_Reject(Rejection(status=status, reason=reason))
