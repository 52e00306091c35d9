// Drives the gateway's OpenAI surface with the official openai SDK, as a
// user would. Run by internal/e2e TestOpenAISurfaceWithSDK with SLUICE_URL
// set; prints "ok" at the end, or throws.
import OpenAI from 'openai';

const base = process.env.SLUICE_URL;

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

// A client that counts the HTTP requests it sends, retries included.
function counted(apiKey, maxRetries) {
  const c = { calls: 0 };
  c.client = new OpenAI({
    baseURL: `${base}/v1`,
    apiKey,
    maxRetries,
    fetch: (url, init) => {
      c.calls++;
      return fetch(url, init);
    },
  });
  return c;
}

const team = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'k-team', maxRetries: 0 });

// 1. A request that reserves more tokens than the tenant's whole tpm: the
// SDK, allowed 3 retries, sends it once (x-should-retry: false).
{
  const c = counted('k-small', 3);
  let err;
  try {
    await c.client.chat.completions.create({ model: 'sim-llm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 50000 });
  } catch (e) {
    err = e;
  }
  assert(err instanceof OpenAI.RateLimitError, `want a RateLimitError, got ${err}`);
  assert(err.headers.get('x-should-retry') === 'false', 'no x-should-retry: false');
  assert(c.calls === 1, `the SDK sent the hopeless request ${c.calls} times, want 1`);
  // The same tenant's small request passes: the refusal took nothing.
  const ok = await c.client.chat.completions.create({ model: 'sim-llm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 });
  assert(ok.choices.length === 1, 'small request failed');
}

// 2. models.list lists the ids the replicas serve, not the pool's pattern;
// models.retrieve answers them and 404s the rest.
{
  const ids = [];
  for await (const m of team.models.list()) ids.push(m.id);
  assert(ids.includes('sim-llm') && !ids.includes('sim-*'), `models.list: ${JSON.stringify(ids)}`);
  const m = await team.models.retrieve('sim-llm');
  assert(m.id === 'sim-llm' && m.object === 'model', `models.retrieve: ${JSON.stringify(m)}`);
  let err;
  try {
    await team.models.retrieve('no-such-model');
  } catch (e) {
    err = e;
  }
  assert(err instanceof OpenAI.NotFoundError, `retrieve of an unknown model: ${err}`);
}

// 3. The Responses API, whole and streamed; the gateway reads the usage of
// both (the Go side checks sluice_tokens_total for these tenants).
{
  const a = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'k-resp-a', maxRetries: 0 });
  const r = await a.responses.create({ model: 'sim-llm', input: 'tell me a story', max_output_tokens: 16 });
  assert(r.object === 'response' && r.status === 'completed', `responses.create: ${JSON.stringify(r).slice(0, 300)}`);
  assert(r.output_text.length > 0 && r.usage.output_tokens > 0 && r.usage.input_tokens > 0, `responses.create usage: ${JSON.stringify(r.usage)}`);

  const s = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'k-resp-s', maxRetries: 0 });
  const stream = s.responses.stream({ model: 'sim-llm', input: 'tell me another story', max_output_tokens: 16 });
  let deltas = '';
  const types = new Set();
  for await (const ev of stream) {
    types.add(ev.type);
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
  }
  const final = await stream.finalResponse();
  assert(types.has('response.created') && types.has('response.completed'), `stream events: ${[...types]}`);
  const text = final.output.flatMap((o) => o.content ?? []).filter((c) => c.type === 'output_text').map((c) => c.text).join('');
  assert(deltas.length > 0 && text === deltas, `streamed text ${JSON.stringify(deltas)} vs final ${JSON.stringify(text)}`);
  assert(final.usage.output_tokens > 0, `streamed usage: ${JSON.stringify(final.usage)}`);
}

// 4. A rerank request (vLLM's /v1/rerank) is routed by its model like any
// other JSON request.
{
  const res = await fetch(`${base}/v1/rerank`, {
    method: 'POST',
    headers: { Authorization: 'Bearer k-team', 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'sim-llm', query: 'fast fox', documents: ['a quick fox', 'a lazy dog', 'fast foxes'], top_n: 2 }),
  });
  const body = await res.json();
  assert(res.status === 200 && body.results.length === 2 && body.model === 'sim-llm', `rerank: ${res.status} ${JSON.stringify(body)}`);
}

console.log('ok');
