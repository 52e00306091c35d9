// Drives sluice's Files and Batch APIs with the official openai SDK, as a
// user would: upload, create, poll, download the output, cancel. Run by
// internal/batch TestOfficialSDK with SLUICE_URL set; prints "ok" at the
// end, or throws.
import OpenAI, { toFile } from 'openai';

const base = process.env.SLUICE_URL;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'team-sdk', maxRetries: 0 });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const final = ['completed', 'failed', 'expired', 'cancelled'];

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function jsonl(n, prefix) {
  let s = '';
  for (let i = 0; i < n; i++) {
    s += JSON.stringify({
      custom_id: `${prefix}-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'sim', messages: [{ role: 'user', content: `${prefix}-${i}` }] },
    }) + '\n';
  }
  return s;
}

async function poll(id, until) {
  for (let i = 0; i < 600; i++) {
    const b = await client.batches.retrieve(id);
    if (until(b)) return b;
    await sleep(100);
  }
  throw new Error(`batch ${id} never reached the state waited for`);
}

async function control(action) {
  const res = await fetch(`${base}/test/${action}`, { method: 'POST' });
  assert(res.ok, `control ${action}: ${res.status}`);
}

// 1. A batch that completes.
const n = 25;
const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(n, 'sdk')), 'batch.jsonl'), purpose: 'batch' });
assert(file.id.startsWith('file-') && file.purpose === 'batch' && file.object === 'file', `file ${JSON.stringify(file)}`);
const got = await client.files.retrieve(file.id);
assert(got.bytes === file.bytes && got.filename === 'batch.jsonl', `retrieved file ${JSON.stringify(got)}`);

const batch = await client.batches.create({
  input_file_id: file.id,
  endpoint: '/v1/chat/completions',
  completion_window: '24h',
  metadata: { run: 'sdk' },
});
assert(batch.object === 'batch' && batch.request_counts.total === n, `created ${JSON.stringify(batch)}`);
const done = await poll(batch.id, (b) => final.includes(b.status));
assert(done.status === 'completed', `status ${done.status}: ${JSON.stringify(done.errors)}`);
assert(done.request_counts.completed === n && done.request_counts.failed === 0, `counts ${JSON.stringify(done.request_counts)}`);
assert(done.metadata.run === 'sdk', 'metadata');

const content = await client.files.content(done.output_file_id);
const lines = (await content.text()).trim().split('\n').map((l) => JSON.parse(l));
assert(lines.length === n, `${lines.length} output lines`);
const seen = new Set();
for (const l of lines) {
  assert(!seen.has(l.custom_id), `custom_id ${l.custom_id} twice`);
  seen.add(l.custom_id);
  assert(l.error === null && l.response.status_code === 200, `line ${JSON.stringify(l)}`);
  const answer = l.response.body.choices[0].message.content;
  assert(answer === `echo: ${l.custom_id}`, `answer ${answer} for ${l.custom_id}`);
}

let listed = 0;
for await (const b of client.batches.list({ limit: 1 })) {
  listed++;
}
assert(listed === 1, `${listed} batches listed`);

// 2. A batch cancelled while its requests wait on the model.
await control('hold');
const slowFile = await client.files.create({ file: await toFile(Buffer.from(jsonl(40, 'slow')), 'slow.jsonl'), purpose: 'batch' });
const slow = await client.batches.create({ input_file_id: slowFile.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
await poll(slow.id, (b) => b.status === 'in_progress');
await control('wait-busy');
const cancelling = await client.batches.cancel(slow.id);
assert(cancelling.status === 'cancelling', `cancel answered ${cancelling.status}`);
await control('release');
const cancelled = await poll(slow.id, (b) => final.includes(b.status));
assert(cancelled.status === 'cancelled', `status ${cancelled.status}`);
const rc = cancelled.request_counts;
assert(rc.total === 40 && rc.completed + rc.failed === 40 && rc.completed < 40, `counts ${JSON.stringify(rc)}`);
const errText = await (await client.files.content(cancelled.error_file_id)).text();
const errLines = errText.trim().split('\n').map((l) => JSON.parse(l));
assert(errLines.length === rc.failed && errLines.every((l) => l.error.code === 'batch_cancelled'), 'error file');

// 3. Deleting a file.
const del = await client.files.delete(file.id);
assert(del.deleted === true, 'delete');
let missing = false;
try {
  await client.files.retrieve(file.id);
} catch (e) {
  missing = e.status === 404;
}
assert(missing, 'a deleted file is 404');

console.log('ok');
