"""The reference Standard Webhooks library, driven by the tests as an independent implementation.

    standard_webhooks.py sign SECRET MSG_ID TIMESTAMP < body     prints webhook-signature
    standard_webhooks.py verify SECRET HEADERS_JSON < body      exits 0 if the signature is good
"""

import datetime
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    mode, secret = sys.argv[1], sys.argv[2]
    body = sys.stdin.buffer.read().decode()
    wh = Webhook(secret)
    if mode == "sign":
        msg_id, ts = sys.argv[3], int(sys.argv[4])
        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
        print(wh.sign(msg_id, when, body))
        return 0
    if mode == "verify":
        headers = json.loads(sys.argv[3])
        try:
            wh.verify(body, headers)
        except WebhookVerificationError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
