#!/bin/sh
# A fast test agent: replies once through /send with curl and exits with curl's status.
# $1: the reply type (default DONE).
exec curl -s -f -o /dev/null -X POST "$INBOX_REPLY_URL" \
  -H "Authorization: Bearer $INBOX_REPLY_TOKEN" \
  -H "Content-Type: application/json" \
  -d "{\"type\": \"${1:-DONE}\", \"payload\": {\"message\": \"$INBOX_MESSAGE_ID\"}}"
