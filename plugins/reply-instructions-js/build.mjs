// Builds dist/reply_instructions_js.wasm from plugin.js with componentize-js (`npm run build`).
//
// The component targets world `plugin` of ../../wit. StarlingMonkey's `http` and `fetch-event`
// features are disabled: they would import wasi:http, which the agent-inbox host does not provide.
// `stdio` stays (a thrown error is printed to stderr before the trap, and the host puts the end of
// stderr in the trap error), and so do `random` and `clocks` (plain WASI imports the host has).

import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist', 'reply_instructions_js.wasm');

// A fix to the JS glue componentize-js 0.23.0 generates. To pass a string back to the host (the
// whole turn text, here) the glue first counts its UTF-8 length in a JS loop over every UTF-16
// unit, which the component's interpreter runs at about 0.16 µs a character: 4 ms for a 25 KB
// turn, 40 ms for 256 KB, as much as all the rest of the call. The native TextEncoder gives the
// same length (a lone surrogate becomes U+FFFD, 3 bytes, in both). The glue comes from the
// splicer module that componentize() itself imports, so wrapping its `spliceBindings` here
// changes what it builds. If a new version's glue no longer has the loop, the build says so.
const splicerUrl = new URL(
  '../lib/spidermonkey-embedding-splicer.js',
  import.meta.resolve('@bytecodealliance/componentize-js'),
);
const { splicer } = await import(splicerUrl);
const spliceBindings = splicer.spliceBindings;
splicer.spliceBindings = (...args) => {
  const spliced = spliceBindings(...args);
  const glue = spliced.jsBindings;
  const start = glue.indexOf('  let len = 0;\n  let codepoints = 0;\n  for (let i = 0; i < s.length; i++) {');
  const end = glue.indexOf('  const ptr = realloc(0, 0, 1, len);', start);
  // `codepoints` must be used only there: declared, counted, returned.
  if (start === -1 || end === -1 || glue.split('codepoints').length - 1 !== 3) {
    throw new Error(
      'build.mjs: the componentize-js glue changed; drop or adapt the UTF-8 length fix in build.mjs',
    );
  }
  spliced.jsBindings =
    glue.slice(0, start) +
    '  const len = TEXT_ENCODER_UTF8.encode(s).length;\n  const codepoints = undefined;\n' +
    glue.slice(end);
  return spliced;
};

const started = Date.now();
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, '..', '..', 'wit'),
  worldName: 'plugin',
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(`wrote ${out} (${component.length} bytes) in ${seconds} s`);
