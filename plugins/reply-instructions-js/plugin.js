// An agent-inbox plugin in JavaScript: it writes the text an agent receives, and can send each
// kind of reply to only some peers. It does the same job as the Rust `reply-instructions` plugin.
//
// The host calls the three functions of `hooks` below; their names, arguments and results come
// from `wit/plugin.wit` (kebab-case there, camelCase here: `check-message` is `checkMessage`,
// `msg-type` is `msgType`). Every call gets `config`: the route's `plugin_config` table as JSON
// text, for example
//
//   {"preamble": "You are the planner. Be brief.",
//    "examples": {"STATUS": {"state": "working"}},
//    "to_by_type": {"STATUS": ["tony"]}}
//
// Every key is optional.

// Payloads longer than this go into the turn text as the sender wrote them instead of being
// pretty-printed: parsing and printing a big document costs time and memory the call may not have.
const MAX_PRETTY_PAYLOAD = 64 * 1024;

export const hooks = {
  // `check-message` runs on `POST /message` before the sender gets its ack. It returns a
  // `message-verdict`, a WIT variant: `{ tag: 'accept' }`, `{ tag: 'rewrite', val: {...} }`,
  // `{ tag: 'route-to', val: {...} }` or `{ tag: 'reject', val: { status, reason } }`.
  // This plugin takes every message as it is.
  checkMessage(message, config) {
    return { tag: 'accept' };
  },

  // `render-turn` runs before the agent starts and returns the whole text the agent receives, or
  // `undefined` (WIT `none`) for the host's built-in text. `reply` holds what the agent needs to
  // answer: the `/send` URL, the Authorization header with this turn's token (a secret: never
  // log it), the reply types it may use and when its token expires.
  renderTurn(message, reply, config) {
    const { preamble, examples } = parseConfig(config);
    let text = '';
    if (typeof preamble === 'string') {
      text += preamble.trimEnd() + '\n\n';
    }
    text += `Type: ${message.msgType}\nFrom: ${message.sender}\n`;
    text += `Message id: ${message.id}\nThread: ${message.threadId}\n`;
    // A WIT `option<string>` arrives as a string or `undefined`.
    if (message.inReplyTo !== undefined) {
      text += `In reply to: ${message.inReplyTo}\n`;
    }
    text += `Payload:\n${prettyPayload(message.payload)}\n`;

    if (reply.replyTypes.length === 0) {
      return text + '\nNo reply is expected for this message.\n';
    }
    const url = shellQuote(reply.url);
    text += `\nReply by POSTing JSON to ${url}, for example:\n\n`;
    text += `  curl -s -X POST ${url} \\\n`;
    text += `    --retry 5 --retry-all-errors \\\n`;
    text += `    -H ${shellQuote(reply.authHeader)} \\\n`;
    text += `    -H 'Content-Type: application/json' \\\n`;
    text += `    --data-binary @body.json\n\n`;
    text += 'where body.json is one of these, one per reply type:\n';
    for (const type of reply.replyTypes) {
      const body = { type, payload: examples?.[type] ?? {} };
      text += `\n${type}:\n${JSON.stringify(body, null, 2)}\n`;
    }
    text += `\nValid types: ${reply.replyTypes.join(', ')}. `;
    text += `You may reply more than once; replies are accepted until ${reply.deadline}.\n`;
    return text;
  },

  // `check-reply` runs on `POST /send` before the agent's reply is relayed. `replyTo` lists the
  // peers the route may reply to. It returns a `reply-verdict`: `{ tag: 'accept' }` (to all of
  // them), `{ tag: 'relay', val: { rewrite, to } }` or `{ tag: 'reject', val: { status, reason } }`.
  checkReply(message, reply, replyTo, config) {
    const peers = parseConfig(config).to_by_type?.[reply.msgType];
    if (!Array.isArray(peers)) {
      return { tag: 'accept' };
    }
    // Only peers the route allows: naming another would make the host refuse the whole reply.
    const to = peers.filter((peer) => replyTo.includes(peer));
    return { tag: 'relay', val: { rewrite: undefined, to } };
  },
};

// A broken `plugin_config` is the operator's mistake: throwing makes the call trap, and the host
// reports the plugin as failed with this message (a thrown error's text goes to stderr, which the
// host puts in its log).
function parseConfig(text) {
  const config = JSON.parse(text);
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new Error('reply-instructions-js: plugin_config must be a JSON object');
  }
  return config;
}

function prettyPayload(payload) {
  if (payload.length > MAX_PRETTY_PAYLOAD) {
    return payload;
  }
  try {
    return JSON.stringify(JSON.parse(payload), null, 2);
  } catch {
    return payload;
  }
}

// Quotes `s` for a POSIX shell, so a URL or header with spaces survives copy and paste.
function shellQuote(s) {
  return `'${s.replaceAll("'", "'\\''")}'`;
}
