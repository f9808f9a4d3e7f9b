// Reads a HAR file back the way a HAR consumer does: validates it with har-validator (the
// HAR 1.2 schema of the har-schema package, with ajv) and lists what each entry holds.
// Prints one JSON object (for tests/export.rs).
//
//   node tests/browser/har-check.mjs FILE.har
import { readFileSync } from 'node:fs';
import validate from 'har-validator';

const file = process.argv[2];
if (!file) {
  console.error('usage: node har-check.mjs FILE.har');
  process.exit(2);
}
const har = JSON.parse(readFileSync(file, 'utf8'));
const result = { valid: false, errors: [], entries: [] };
try {
  await validate.har(har);
  result.valid = true;
} catch (e) {
  result.errors = (e.errors || [e]).map((x) => (x.dataPath || '') + ' ' + (x.message || String(x)));
}
for (const e of har.log.entries || []) {
  const c = e.response.content || {};
  const body = c.text === undefined ? null : c.encoding === 'base64' ? Buffer.from(c.text, 'base64') : Buffer.from(c.text, 'utf8');
  result.entries.push({
    method: e.request.method,
    url: e.request.url,
    status: e.response.status,
    started: Date.parse(e.startedDateTime),
    time: e.time,
    bodyBytes: body ? body.length : null,
    postParams: e.request.postData ? (e.request.postData.params || []).map((p) => p.name) : null,
    events: (e._eventSourceMessages || []).length,
    firstEvent: (e._eventSourceMessages || [])[0] || null,
  });
}
console.log(JSON.stringify(result));
