#!/bin/sh
# A fast test agent: replies once through /send with curl and exits with curl's status.
# $1: the reply type (default DONE). The credential is read from the inbox's header file, so the
# token is never on curl's command line.
exec curl -s -f -o /dev/null -X POST "$INBOX_REPLY_URL" \
  -H "@$INBOX_REPLY_AUTH_FILE" \
  -H "Content-Type: application/json" \
  -d "{\"type\": \"${1:-DONE}\", \"payload\": {\"message\": \"$INBOX_MESSAGE_ID\"}}"
