// agent-inbox plugin in JavaScript that does the same job as the Rust `reply-instructions` plugin
// (../reply-instructions/src/lib.rs): it writes the text an agent receives (a preamble from
// `plugin_config`, the message, the curl command to reply with and one example body per reply type)
// and can relay each reply type to only some peers.
//
// Config: {"preamble": "...", "examples": {"STATUS": {"state": "working"}},
//          "to_by_type": {"STATUS": ["tony"]}}; every key is optional.
//
// Its output is meant to be byte for byte the Rust plugin's. The Rust one reads and pretty-prints
// JSON with serde_json (1.0.154, default features), which differs from JSON.parse/JSON.stringify:
// object keys come out sorted (by code point), `1.0` stays `1.0`, integers past 2^53 stay exact,
// big and small floats print as `1e+21` / `1e-7` with serde's own thresholds, some numbers are
// parsed with serde's not always correctly rounded algorithm, nesting stops at 127 levels, and
// lone surrogate escapes are errors. So this file reads JSON the way serde_json does:
//
// - fast path (`readJson`): the engine's native JSON.parse does the work; its reviver gets each
//   number's source text and turns it into the text serde_json prints, and sorts object keys so
//   that the native JSON.stringify prints objects in serde_json's order; a nesting check and a
//   lone-surrogate check refuse what serde_json refuses;
// - exact path (`Parser`): a port of serde_json's parser, for the error message of a broken
//   plugin_config (the same words and position as the Rust plugin's) and for the rare number the
//   fast path cannot print by itself.
//
// It runs in StarlingMonkey's interpreter, where a JS loop costs about 0.1-0.2 µs a step, so the
// work per character of input is left to native code (JSON.parse, JSON.stringify, indexOf, split).

// ---------------------------------------------------------------------------------------------
// Keep a leading U+FEFF in the strings the host passes in.
//
// componentize-js's generated bindings turn every string argument into a JS string with one
// `new TextDecoder()`, whose default (ignoreBOM: false) drops a leading U+FEFF: a payload or
// plugin_config starting with a byte order mark would reach this code without it, and (unlike in
// the Rust plugin, which sees the exact string) parse as JSON. The bindings look `decode` up on
// the prototype at every call, so sending default decoders' calls to a BOM-keeping decoder here
// (at initialization, which componentize-js snapshots) makes the strings arrive intact. Nothing
// else in this component decodes text.

{
  const keepBom = new TextDecoder('utf-8', { ignoreBOM: true });
  const decode = TextDecoder.prototype.decode;
  TextDecoder.prototype.decode = function (input, options) {
    if (options === undefined && this.encoding === 'utf-8' && !this.ignoreBOM && !this.fatal) {
      return decode.call(keepBom, input);
    }
    return decode.call(this, input, options);
  };
}

// ---------------------------------------------------------------------------------------------
// The hooks (interface `agent-inbox:plugin/hooks@0.1.0`).

export const hooks = {
  checkMessage(_message, _config) {
    // Like the Rust plugin, this hook does not even read the config.
    return { tag: 'accept' };
  },

  renderTurn(message, reply, config) {
    return render(message, reply, parseConfig(config));
  },

  checkReply(_message, reply, replyTo, config) {
    const toByType = member(parseConfig(config).value, 'to_by_type');
    if (!isObject(toByType)) {
      return { tag: 'accept' };
    }
    const peers = member(toByType, reply.msgType);
    if (!Array.isArray(peers)) {
      return { tag: 'accept' };
    }
    // Only peers the route allows: naming another would make the host refuse the whole reply.
    const to = peers.filter((peer) => isString(peer) && replyTo.includes(peer));
    return { tag: 'relay', val: { rewrite: undefined, to } };
  },
};

// ---------------------------------------------------------------------------------------------
// The turn text.

/** Parses `plugin_config`; a broken one throws, which traps, so the host reports the mistake. */
function parseConfig(text) {
  const config = readJson(text);
  if (config === INVALID) {
    // The exact parser says why, in serde_json's words.
    let reason = 'invalid JSON';
    try {
      new Parser(text).parseDocument();
    } catch (e) {
      reason = e.message;
    }
    throw new Error(`reply-instructions: plugin_config is not valid JSON: ${reason}`);
  }
  if (!isObject(config.value)) {
    throw new Error('reply-instructions: plugin_config must be a JSON object');
  }
  return config;
}

function render(message, reply, config) {
  let text = '';
  const preamble = member(config.value, 'preamble');
  if (isString(preamble)) {
    text += trimEnd(preamble) + '\n\n';
  }
  const parsed = readJson(message.payload);
  const payload = parsed === INVALID ? message.payload : toStringPretty(parsed.value, parsed);
  text +=
    `Type: ${message.msgType}\nFrom: ${message.sender}\n` +
    `Message id: ${message.id}\nThread: ${message.threadId}\n`;
  if (message.inReplyTo !== undefined && message.inReplyTo !== null) {
    text += `In reply to: ${message.inReplyTo}\n`;
  }
  text += `Payload:\n${payload}\n`;
  if (reply.replyTypes.length === 0) {
    text += '\nNo reply is expected for this message.\n';
    return text;
  }
  const examples = member(config.value, 'examples');
  const url = shellQuote(reply.url);
  const auth = shellQuote(reply.authHeader);
  text +=
    `\nReply by POSTing JSON to ${url}, for example:\n\n` +
    `  curl -s -X POST ${url} \\\n    -H ${auth} \\\n    -H 'Content-Type: application/json' \\\n` +
    `    --data-binary @body.json\n\nwhere body.json is one of these, one per reply type:\n`;
  for (const msgType of reply.replyTypes) {
    const example = isObject(examples) ? member(examples, msgType) : undefined;
    // json!({"type": …, "payload": …}), keys in serde_json's order.
    const body = Object.create(null);
    body.payload = example === undefined ? {} : example;
    body.type = msgType;
    text += `\n${msgType}:\n${toStringPretty(body, config)}\n`;
  }
  text +=
    `\nValid types: ${reply.replyTypes.join(', ')}. ` +
    `You may reply more than once; replies are accepted until ${reply.deadline}.\n`;
  return text;
}

/** Quotes `s` for a POSIX shell so a URL or header with spaces survives copy and paste. */
function shellQuote(s) {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

/** Rust's `str::trim_end`: strips Unicode White_Space (not JS's set, which has U+FEFF, lacks U+0085). */
function trimEnd(s) {
  let end = s.length;
  while (end > 0 && isRustWhitespace(s.charCodeAt(end - 1))) {
    end -= 1;
  }
  return s.slice(0, end);
}

function isRustWhitespace(c) {
  return (
    (c >= 0x09 && c <= 0x0d) ||
    c === 0x20 ||
    c === 0x85 ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

// ---------------------------------------------------------------------------------------------
// JSON as serde_json::Value sees it, read with the native JSON.parse.
//
// `readJson` returns a document: `value` is what JSON.parse returns, with two changes made by its
// reviver, which sees each value after its members:
// - a number whose serde_json text differs from JS's (`1.0`, `1e+16`, `18446744073709551615`, …)
//   becomes a marked string: a lone U+D800 (which no accepted input string can hold, since
//   serde_json refuses lone surrogates) followed by that text;
// - an object becomes a copy with its keys in serde_json's order, so the native JSON.stringify
//   prints it as serde_json does. That fails for keys that look like array indices, which JS
//   always enumerates first: such a document has `native` false and is printed by JS code.

/** What `readJson` returns for text serde_json would refuse. */
const INVALID = Symbol('invalid JSON');
const MARK = '\ud800';
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const ABOVE_SURROGATES = /[\ud800-\uffff]/;
/** serde_json refuses a 128th level of nesting. */
const MAX_DEPTH = 127;

// The reviver needs the number's source text (JSON.parse source text access, which
// StarlingMonkey's SpiderMonkey has): fail the build, not the calls, on an engine without it.
if (JSON.parse('[1.0]', (_key, v, context) => (typeof v === 'number' ? context?.source : v))[0] !== '1.0') {
  throw new Error('reply-instructions: this JS engine lacks JSON.parse source text access');
}

/** `serde_json::from_str::<Value>(text)` as `{value, native}`, or INVALID where that fails. */
function readJson(text) {
  // Everything serde_json accepts, JSON.parse does too; the reverse is checked here. Nesting
  // first: JSON.parse would build all of a hostile 100,000 levels (tens of MiB).
  if (tooDeep(text)) {
    return INVALID;
  }
  const escapes = text.includes('\\u');
  let invalid = false;
  let native = true;
  let value;
  try {
    value = JSON.parse(text, function (key, v, context) {
      if (escapes && LONE_SURROGATE.test(key)) {
        invalid = true;
      }
      switch (typeof v) {
        case 'number': {
          const printed = numberText(context.source);
          if (printed === undefined) {
            invalid = true;
            return v;
          }
          return printed === String(v) ? v : MARK + printed;
        }
        case 'string':
          if (escapes && LONE_SURROGATE.test(v)) {
            invalid = true;
          }
          return v;
        case 'object': {
          if (v === null || Array.isArray(v)) {
            return v;
          }
          const keys = Object.keys(v);
          if (keys.length < 2) {
            return v;
          }
          const first = keys[0].charCodeAt(0);
          if (first >= 0x30 && first <= 0x39) {
            // Perhaps array-index keys, which come first in any JS object.
            native = false;
            return v;
          }
          sortKeys(keys);
          const sorted = Object.create(null);
          for (let i = 0; i < keys.length; i++) {
            sorted[keys[i]] = v[keys[i]];
          }
          return sorted;
        }
        default:
          return v;
      }
    });
  } catch {
    return INVALID;
  }
  if (invalid) {
    return INVALID;
  }
  return { value, native };
}

/**
 * Whether the JSON `text` nests arrays and objects more than MAX_DEPTH deep (exact for valid
 * JSON; for invalid JSON either answer leads to INVALID). Native string searches do the scanning.
 */
function tooDeep(text) {
  let opening = 0;
  for (const c of ['[', '{']) {
    for (let i = text.indexOf(c); i !== -1 && opening <= MAX_DEPTH; i = text.indexOf(c, i + 1)) {
      opening += 1;
    }
  }
  if (opening <= MAX_DEPTH) {
    return false;
  }
  // Keep what is outside strings: drop escaped backslashes, then escaped quotes; every other
  // piece between the remaining quotes is then outside a string.
  const unescaped = text.includes('\\') ? text.replaceAll('\\\\', '').replaceAll('\\"', '') : text;
  const pieces = unescaped.split('"');
  const outside = [];
  for (let i = 0; i < pieces.length; i += 2) {
    outside.push(pieces[i]);
  }
  const brackets = outside.join('').replaceAll('{', '[').replaceAll('}', ']');
  let depth = 0;
  let open = brackets.indexOf('[');
  let close = brackets.indexOf(']');
  while (open !== -1) {
    if (close !== -1 && close < open) {
      depth -= 1;
      close = brackets.indexOf(']', close + 1);
    } else {
      depth += 1;
      if (depth > MAX_DEPTH) {
        return true;
      }
      open = brackets.indexOf('[', open + 1);
    }
  }
  return false;
}

/** Sorts keys in Rust's `String` order: by code point. */
function sortKeys(keys) {
  // The default sort compares UTF-16 code units, which is code point order unless a key holds
  // a surrogate or a character of U+E000..U+FFFF.
  if (ABOVE_SURROGATES.test(keys.join(''))) {
    keys.sort(compareCodePoints);
  } else {
    keys.sort();
  }
}

/** The text serde_json prints for the number written as `token`, or undefined if out of range. */
function numberText(token) {
  const negative = token.charCodeAt(0) === 0x2d;
  const digits = negative ? token.slice(1) : token;
  if (!/[.eE]/.test(digits)) {
    // An integer: serde_json keeps it as u64 or i64 (printed as written), except -0 and those
    // out of range, which become floats.
    if (negative) {
      if (digits === '0') {
        return '-0.0';
      }
      if (digits.length < 19 || (digits.length === 19 && digits <= '9223372036854775808')) {
        return token;
      }
    } else if (digits.length < 20 || (digits.length === 20 && digits <= '18446744073709551615')) {
      return token;
    }
  } else {
    // A float. serde_json computes significand * 10^exponent in f64: when the significand has at
    // most 15 digits and |exponent| <= 22 that is one exact operand and one rounding, so the
    // correctly rounded value JS reads.
    const [mantissa, exponentText = '0'] = digits.split(/[eE]/);
    const [whole, fraction = ''] = mantissa.split('.');
    const significant = (whole + fraction).replace(/^0+/, '');
    const exponent = Number(exponentText) - fraction.length;
    if (significant.length <= 15 && exponent >= -22 && exponent <= 22) {
      return formatF64(Number(token));
    }
  }
  // Anything else goes through the port of serde_json's own number parser.
  try {
    return new Parser(token).parseDocument().text;
  } catch {
    return undefined;
  }
}

function isMarked(value) {
  // A string holding a surrogate pair can start with U+D800 too; a marker is followed by a
  // digit or `-`.
  return value.charCodeAt(0) === 0xd800 && !(value.charCodeAt(1) >= 0xdc00);
}

function isString(value) {
  return typeof value === 'string' && !isMarked(value);
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `map.get(key)` of serde_json's Map: own members only ("constructor" is not inherited). */
function member(object, key) {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

/** serde_json::to_string_pretty of `value`, a member of `doc` (or all of it). */
function toStringPretty(value, doc) {
  if (!doc.native) {
    const parts = [];
    writePretty(value, '', parts);
    return parts.join('');
  }
  const out = JSON.stringify(value, null, 2);
  if (!out.includes('"\\ud800')) {
    return out;
  }
  // JSON.stringify writes a marked number as "\ud800TEXT": keep TEXT.
  const parts = out.split('"\\ud800');
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i];
    const end = part.indexOf('"');
    parts[i] = part.slice(0, end) + part.slice(end + 1);
  }
  return parts.join('');
}

/** The same in JS, for documents the native printer cannot order. */
function writePretty(value, indent, out) {
  if (typeof value === 'string') {
    // JSON.stringify escapes as serde_json does (`"`, `\`, control characters, lowercase hex),
    // given that no lone surrogate got this far.
    out.push(isMarked(value) ? value.slice(1) : JSON.stringify(value));
  } else if (typeof value === 'number' || value === null || value === true || value === false) {
    out.push(String(value));
  } else if (Array.isArray(value)) {
    if (value.length === 0) {
      out.push('[]');
      return;
    }
    const inner = indent + '  ';
    for (let i = 0; i < value.length; i++) {
      out.push(i === 0 ? '[\n' : ',\n', inner);
      writePretty(value[i], inner, out);
    }
    out.push('\n', indent, ']');
  } else {
    const keys = Object.keys(value);
    if (keys.length === 0) {
      out.push('{}');
      return;
    }
    sortKeys(keys);
    const inner = indent + '  ';
    for (let i = 0; i < keys.length; i++) {
      out.push(i === 0 ? '{\n' : ',\n', inner, JSON.stringify(keys[i]), ': ');
      writePretty(value[keys[i]], inner, out);
    }
    out.push('\n', indent, '}');
  }
}

// ---------------------------------------------------------------------------------------------
// The exact path: serde_json's parser, step for step (its values are Maps, arrays, strings,
// booleans, null and JsonNumber; only its errors and numbers are used).

class JsonNumber {
  constructor(text) {
    this.text = text;
  }
}

class JsonError extends Error {}

const U64_MAX = 18446744073709551615n;
const I32_MAX = 2147483647;
const I32_MIN = -2147483648;
/** serde_json's table: 1e0 to 1e308, each correctly rounded (as Rust's float literals are). */
const POW10 = Array.from({ length: 309 }, (_, i) => Number(`1e${i}`));

class Parser {
  constructor(text) {
    this.s = text;
    this.pos = 0;
    // serde_json refuses a 128th level of nesting.
    this.remainingDepth = 128;
  }

  /**
   * Throws serde_json's error for the character at index `at` (the end of the text for EOF), with
   * its position: the line, and the column in UTF-8 bytes up to and including that character's
   * first byte (for an ASCII character, serde_json's own numbers).
   */
  /** The whole text as one value, as `serde_json::from_str` reads it. */
  parseDocument() {
    const value = this.parseValue();
    this.skipWhitespace();
    if (this.pos < this.s.length) {
      this.fail('trailing characters');
    }
    return value;
  }

  fail(reason, at = this.pos) {
    const eof = at >= this.s.length;
    const end = eof ? this.s.length : at + 1;
    const prefix = this.s.slice(0, end);
    const lineStart = prefix.lastIndexOf('\n') + 1;
    let line = 1;
    for (let i = 0; i < lineStart; i++) {
      if (prefix.charCodeAt(i) === 0x0a) {
        line += 1;
      }
    }
    const column =
      lineStart === end ? 0 : utf8Length(this.s.slice(lineStart, eof ? end : at)) + (eof ? 0 : 1);
    throw new JsonError(`${reason} at line ${line} column ${column}`);
  }

  peek() {
    return this.pos < this.s.length ? this.s[this.pos] : undefined;
  }

  skipWhitespace() {
    for (;;) {
      const c = this.peek();
      if (c === ' ' || c === '\n' || c === '\t' || c === '\r') {
        this.pos += 1;
      } else {
        return;
      }
    }
  }

  parseValue() {
    this.skipWhitespace();
    const c = this.peek();
    switch (c) {
      case undefined:
        return this.fail('EOF while parsing a value');
      case 'n':
        return this.ident('null', null);
      case 't':
        return this.ident('true', true);
      case 'f':
        return this.ident('false', false);
      case '"':
        this.pos += 1;
        return this.parseString();
      case '-':
        this.pos += 1;
        return this.parseInteger(false);
      case '[':
        return this.nested(() => this.parseArray());
      case '{':
        return this.nested(() => this.parseObject());
      default:
        if (c >= '0' && c <= '9') {
          return this.parseInteger(true);
        }
        return this.fail('expected value');
    }
  }

  ident(word, value) {
    for (let i = 0; i < word.length; i++) {
      const c = this.peek();
      if (c === undefined) {
        this.fail('EOF while parsing a value');
      }
      if (c !== word[i]) {
        this.fail('expected ident');
      }
      this.pos += 1;
    }
    return value;
  }

  nested(parse) {
    this.remainingDepth -= 1;
    if (this.remainingDepth === 0) {
      this.fail('recursion limit exceeded');
    }
    this.pos += 1;
    const value = parse();
    this.remainingDepth += 1;
    return value;
  }

  parseArray() {
    const items = [];
    this.skipWhitespace();
    if (this.peek() === ']') {
      this.pos += 1;
      return items;
    }
    if (this.peek() === undefined) {
      this.fail('EOF while parsing a list');
    }
    for (;;) {
      items.push(this.parseValue());
      this.skipWhitespace();
      const c = this.peek();
      if (c === ']') {
        this.pos += 1;
        return items;
      }
      if (c === undefined) {
        this.fail('EOF while parsing a list');
      }
      if (c !== ',') {
        this.fail('expected `,` or `]`');
      }
      this.pos += 1;
      this.skipWhitespace();
      if (this.peek() === ']') {
        this.fail('trailing comma');
      }
    }
  }

  parseObject() {
    const map = new Map();
    this.skipWhitespace();
    if (this.peek() === '}') {
      this.pos += 1;
      return map;
    }
    let first = true;
    for (;;) {
      this.skipWhitespace();
      const q = this.peek();
      if (q === undefined) {
        this.fail(first ? 'EOF while parsing an object' : 'EOF while parsing a value');
      }
      first = false;
      if (q !== '"') {
        this.fail(q === '}' ? 'trailing comma' : 'key must be a string');
      }
      this.pos += 1;
      const key = this.parseString();
      this.skipWhitespace();
      const colon = this.peek();
      if (colon === undefined) {
        this.fail('EOF while parsing an object');
      }
      if (colon !== ':') {
        this.fail('expected `:`');
      }
      this.pos += 1;
      // Like serde_json's BTreeMap: a repeated key keeps its place and takes the last value.
      map.set(key, this.parseValue());
      this.skipWhitespace();
      const c = this.peek();
      if (c === '}') {
        this.pos += 1;
        return map;
      }
      if (c === undefined) {
        this.fail('EOF while parsing an object');
      }
      if (c !== ',') {
        this.fail('expected `,` or `}`');
      }
      this.pos += 1;
    }
  }

  /** After the opening quote. */
  parseString() {
    let out = '';
    let start = this.pos;
    for (;;) {
      if (this.pos >= this.s.length) {
        this.fail('EOF while parsing a string');
      }
      const code = this.s.charCodeAt(this.pos);
      if (code === 0x22) {
        out += this.s.slice(start, this.pos);
        this.pos += 1;
        return out;
      }
      if (code === 0x5c) {
        out += this.s.slice(start, this.pos);
        this.pos += 1;
        out += this.parseEscape();
        start = this.pos;
      } else if (code < 0x20) {
        this.fail('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        this.pos += 1;
      }
    }
  }

  parseEscape() {
    const c = this.peek();
    if (c === undefined) {
      this.fail('EOF while parsing a string');
    }
    this.pos += 1;
    switch (c) {
      case '"':
        return '"';
      case '\\':
        return '\\';
      case '/':
        return '/';
      case 'b':
        return '\b';
      case 'f':
        return '\f';
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case 'u':
        return this.parseUnicodeEscape();
      default:
        return this.fail('invalid escape', this.pos - 1);
    }
  }

  hex4() {
    if (this.pos + 4 > this.s.length) {
      this.fail('EOF while parsing a string', this.s.length);
    }
    let n = 0;
    for (let i = 0; i < 4; i++) {
      const digit = parseInt(this.s[this.pos + i], 16);
      if (Number.isNaN(digit)) {
        this.fail('invalid escape', this.pos + 3);
      }
      n = n * 16 + digit;
    }
    this.pos += 4;
    return n;
  }

  parseUnicodeEscape() {
    const n = this.hex4();
    if (n >= 0xdc00 && n <= 0xdfff) {
      this.fail('lone leading surrogate in hex escape', this.pos - 1);
    }
    if (n < 0xd800 || n > 0xdbff) {
      return String.fromCharCode(n);
    }
    for (const want of ['\\', 'u']) {
      const c = this.peek();
      if (c === undefined) {
        this.fail('EOF while parsing a string');
      }
      if (c !== want) {
        this.fail('unexpected end of hex escape');
      }
      this.pos += 1;
    }
    const n2 = this.hex4();
    if (n2 < 0xdc00 || n2 > 0xdfff) {
      this.fail('lone leading surrogate in hex escape', this.pos - 1);
    }
    return String.fromCharCode(n, n2);
  }

  isDigit() {
    const c = this.peek();
    return c !== undefined && c >= '0' && c <= '9';
  }

  digit() {
    return this.s.charCodeAt(this.pos) - 0x30;
  }

  // Numbers, step for step as serde_json's parse_integer and friends (without float_roundtrip).

  parseInteger(positive) {
    const c = this.peek();
    if (c === undefined) {
      this.fail('EOF while parsing a value');
    }
    this.pos += 1;
    if (c === '0') {
      if (this.isDigit()) {
        this.fail('invalid number');
      }
      return this.parseNumber(positive, 0n);
    }
    if (c >= '1' && c <= '9') {
      let significand = BigInt(c.charCodeAt(0) - 0x30);
      while (this.isDigit()) {
        const digit = BigInt(this.digit());
        if (significand * 10n + digit > U64_MAX) {
          return f64Number(this.parseLongInteger(positive, significand));
        }
        this.pos += 1;
        significand = significand * 10n + digit;
      }
      return this.parseNumber(positive, significand);
    }
    return this.fail('invalid number', this.pos - 1);
  }

  parseNumber(positive, significand) {
    const c = this.peek();
    if (c === '.') {
      return f64Number(this.parseDecimal(positive, significand, 0));
    }
    if (c === 'e' || c === 'E') {
      return f64Number(this.parseExponent(positive, significand, 0));
    }
    if (positive) {
      return new JsonNumber(significand.toString());
    }
    // Zero ("-0") and magnitudes past i64 become floats.
    if (significand === 0n || significand > 1n << 63n) {
      return f64Number(-Number(significand));
    }
    return new JsonNumber(`-${significand}`);
  }

  parseDecimal(positive, significand, exponentBeforeDecimalPoint) {
    this.pos += 1;
    let exponentAfterDecimalPoint = 0;
    while (this.isDigit()) {
      const digit = BigInt(this.digit());
      if (significand * 10n + digit > U64_MAX) {
        const exponent = exponentBeforeDecimalPoint + exponentAfterDecimalPoint;
        return this.parseDecimalOverflow(positive, significand, exponent);
      }
      this.pos += 1;
      significand = significand * 10n + digit;
      exponentAfterDecimalPoint -= 1;
    }
    if (exponentAfterDecimalPoint === 0) {
      this.fail(this.peek() === undefined ? 'EOF while parsing a value' : 'invalid number');
    }
    const exponent = exponentBeforeDecimalPoint + exponentAfterDecimalPoint;
    const c = this.peek();
    if (c === 'e' || c === 'E') {
      return this.parseExponent(positive, significand, exponent);
    }
    return this.f64FromParts(positive, significand, exponent);
  }

  parseExponent(positive, significand, startingExp) {
    this.pos += 1;
    let positiveExp = true;
    if (this.peek() === '+') {
      this.pos += 1;
    } else if (this.peek() === '-') {
      this.pos += 1;
      positiveExp = false;
    }
    const first = this.peek();
    if (first === undefined) {
      this.fail('EOF while parsing a value');
    }
    if (!(first >= '0' && first <= '9')) {
      this.fail('invalid number');
    }
    this.pos += 1;
    let exp = first.charCodeAt(0) - 0x30;
    while (this.isDigit()) {
      const digit = this.digit();
      this.pos += 1;
      if (exp * 10 + digit > I32_MAX) {
        return this.parseExponentOverflow(positive, significand === 0n, positiveExp);
      }
      exp = exp * 10 + digit;
    }
    const finalExp = positiveExp
      ? Math.min(startingExp + exp, I32_MAX)
      : Math.max(startingExp - exp, I32_MIN);
    return this.f64FromParts(positive, significand, finalExp);
  }

  parseExponentOverflow(positive, zeroSignificand, positiveExp) {
    if (!zeroSignificand && positiveExp) {
      this.fail('number out of range', this.pos - 1);
    }
    while (this.isDigit()) {
      this.pos += 1;
    }
    return positive ? 0.0 : -0.0;
  }

  parseDecimalOverflow(positive, significand, exponent) {
    // Further digits are ignored.
    while (this.isDigit()) {
      this.pos += 1;
    }
    const c = this.peek();
    if (c === 'e' || c === 'E') {
      return this.parseExponent(positive, significand, exponent);
    }
    return this.f64FromParts(positive, significand, exponent);
  }

  parseLongInteger(positive, significand) {
    let exponent = 0;
    for (;;) {
      const c = this.peek();
      if (c !== undefined && c >= '0' && c <= '9') {
        this.pos += 1;
        exponent += 1;
      } else if (c === '.') {
        return this.parseDecimal(positive, significand, exponent);
      } else if (c === 'e' || c === 'E') {
        return this.parseExponent(positive, significand, exponent);
      } else {
        return this.f64FromParts(positive, significand, exponent);
      }
    }
  }

  /** serde_json's lossy significand * 10^exponent (IEEE operations, so the same bits as Rust). */
  f64FromParts(positive, significand, exponent) {
    // BigInt to Number rounds to nearest, ties to even, as Rust's `u64 as f64` does.
    let f = Number(significand);
    for (;;) {
      // i32::wrapping_abs: i32::MIN stays negative, so it is never a table index.
      const index = exponent === I32_MIN ? -1 : Math.abs(exponent);
      if (index >= 0 && index < POW10.length) {
        const pow = POW10[index];
        if (exponent >= 0) {
          f *= pow;
          if (!Number.isFinite(f)) {
            this.fail('number out of range', this.pos - 1);
          }
        } else {
          f /= pow;
        }
        break;
      }
      if (f === 0) {
        break;
      }
      if (exponent >= 0) {
        this.fail('number out of range', this.pos - 1);
      }
      f /= 1e308;
      exponent += 308;
    }
    return positive ? f : -f;
  }
}

function utf8Length(s) {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A surrogate pair is 4 bytes, 2 per half.
    bytes += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3;
  }
  return bytes;
}

function f64Number(f) {
  return new JsonNumber(formatF64(f));
}

/**
 * A finite f64 as serde_json 1.0.154 prints it (with the zmij crate): the shortest digits that
 * round-trip (what JS's Number.prototype.toString picks too), laid out as plain decimals with a
 * `.0` when the decimal exponent is in -5..=15, else as `1.5e+21` / `1e-7`.
 */
function formatF64(f) {
  const sign = f < 0 || Object.is(f, -0) ? '-' : '';
  if (f === 0) {
    return `${sign}0.0`;
  }
  // Shortest round-trip digits and decimal exponent, from JS's own formatting.
  const [mantissa, expText] = String(Math.abs(f)).split('e');
  const [intPart, fracPart = ''] = mantissa.split('.');
  let digits = intPart + fracPart;
  let pointPos = intPart.length + (expText === undefined ? 0 : Number(expText));
  const leadingZeros = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(leadingZeros).replace(/0+$/, '');
  pointPos -= leadingZeros;
  const decExp = pointPos - 1;
  const length = digits.length;
  if (decExp >= -5 && decExp <= 15) {
    if (length - 1 <= decExp) {
      return `${sign}${digits}${'0'.repeat(decExp + 1 - length)}.0`;
    }
    if (decExp >= 0) {
      return `${sign}${digits.slice(0, decExp + 1)}.${digits.slice(decExp + 1)}`;
    }
    return `${sign}0.${'0'.repeat(-decExp - 1)}${digits}`;
  }
  const fraction = length > 1 ? `.${digits.slice(1)}` : '';
  return `${sign}${digits[0]}${fraction}e${decExp >= 0 ? '+' : '-'}${Math.abs(decExp)}`;
}

/**
 * Orders strings as Rust orders `String`s (by UTF-8 bytes, so by code point), not by UTF-16 code
 * unit as JS's default sort does: they differ where a surrogate meets U+E000..U+FFFF.
 */
function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // Move surrogates above U+E000..U+FFFF.
      x = x >= 0xd800 && x <= 0xdfff ? x + 0x2000 : x >= 0xe000 ? x - 0x800 : x;
      y = y >= 0xd800 && y <= 0xdfff ? y + 0x2000 : y >= 0xe000 ? y - 0x800 : y;
      return x - y;
    }
  }
  return a.length - b.length;
}
