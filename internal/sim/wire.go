package sim

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"
)

// endpoint is which OpenAI text endpoint a generation answers.
type endpoint uint8

const (
	chatEndpoint endpoint = iota
	completionEndpoint
	// responsesEndpoint is /v1/responses, whose text starts like a chat
	// message's.
	responsesEndpoint
)

// generation is a validated text request, ready for the engine.
type generation struct {
	ep           endpoint
	model        string
	promptTokens int
	// blocks are the chained hashes of the prompt's full KV blocks, in
	// blockBuf (pooled) when it is set.
	blocks       []uint64
	blockBuf     *[]uint64
	outputTokens int
	// cachedTokens is set once the engine has looked the prompt up.
	cachedTokens int
	hash         uint64
	// finish is "length" when the request set a token limit, which the sim
	// always reaches, and "stop" when it ran to the default length, as a
	// model that ended on its own would report.
	finish       string
	includeUsage bool
}

// setPrompt takes the prompt's length and blocks from a tokenizer that has
// read all of it; a prompt counts at least one token.
func (g *generation) setPrompt(t *tokenizer) {
	g.promptTokens = max(t.tokens, 1)
	g.blocks = t.blocks
}

func (g *generation) prompt() Prompt {
	return Prompt{Tokens: g.promptTokens, Blocks: g.blocks}
}

// token returns output token i, bare and as a JSON string. Chat content
// starts without a space; a completion continues its prompt, so each of its
// tokens starts with one.
func (g *generation) token(i int) (bare, quoted string) {
	k := tokenIndex(g.hash, i)
	if i == 0 && g.ep != completionEndpoint {
		return wordBare[k], jsonBare[k]
	}
	return wordSpaced[k], jsonSpaced[k]
}

// appendUsage appends an OpenAI usage object; cached is the prompt tokens
// served from the prefix cache.
func appendUsage(b []byte, prompt, completion, cached int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(cached), 10)
	return append(b, "}}"...)
}

// appendCompletion appends the non-streaming response of g.
func appendCompletion(b []byte, g *generation, id string, created int64) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	if g.ep == chatEndpoint {
		b = append(b, `,"object":"chat.completion","created":`...)
	} else {
		b = append(b, `,"object":"text_completion","created":`...)
	}
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = appendJSONString(b, g.model)
	if g.ep == chatEndpoint {
		b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	} else {
		b = append(b, `,"choices":[{"index":0,"text":"`...)
	}
	for i := range g.outputTokens {
		bare, _ := g.token(i)
		b = append(b, bare...)
	}
	if g.ep == chatEndpoint {
		b = append(b, `"},"logprobs":null,"finish_reason":"`...)
	} else {
		b = append(b, `","logprobs":null,"finish_reason":"`...)
	}
	b = append(b, g.finish...)
	b = append(b, `"}],"usage":`...)
	b = appendUsage(b, g.promptTokens, g.outputTokens, g.cachedTokens)
	return append(b, "}\n"...)
}

// sseWriter writes one generation as OpenAI server-sent events. Every event
// begins with the same head (id, object, created, model), built once in
// buf[:head]; each event is appended after it and written in one call, so
// streaming allocates nothing per token.
type sseWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	g       *generation
	buf     []byte
	head    int
}

func newSSEWriter(w http.ResponseWriter, g *generation, id string, created int64, buf []byte) *sseWriter {
	b := append(buf[:0], `data: {"id":`...)
	b = appendJSONString(b, id)
	if g.ep == chatEndpoint {
		b = append(b, `,"object":"chat.completion.chunk","created":`...)
	} else {
		b = append(b, `,"object":"text_completion","created":`...)
	}
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = appendJSONString(b, g.model)
	b = append(b, ',')
	f, _ := w.(http.Flusher)
	return &sseWriter{w: w, flusher: f, g: g, buf: b, head: len(b)}
}

// end closes an event: OpenAI sends "usage":null on every chunk but the
// last when the client asked for usage.
func (s *sseWriter) end(b []byte) []byte {
	if s.g.includeUsage {
		return append(b, `,"usage":null}`+"\n\n"...)
	}
	return append(b, "}\n\n"...)
}

// token writes output token i, preceded on the first token of a chat by the
// assistant-role event, and flushes.
func (s *sseWriter) token(i int) error {
	b := s.buf[:s.head]
	_, quoted := s.g.token(i)
	if s.g.ep == chatEndpoint {
		if i == 0 {
			b = append(b, `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]`...)
			b = s.end(b)
			b = append(b, s.buf[:s.head]...)
		}
		b = append(b, `"choices":[{"index":0,"delta":{"content":`...)
		b = append(b, quoted...)
		b = append(b, `},"logprobs":null,"finish_reason":null}]`...)
	} else {
		b = append(b, `"choices":[{"index":0,"text":`...)
		b = append(b, quoted...)
		b = append(b, `,"logprobs":null,"finish_reason":null}]`...)
	}
	return s.write(s.end(b))
}

// finish writes the finish_reason event, the usage event when asked for,
// and the [DONE] sentinel.
func (s *sseWriter) finish() error {
	b := s.buf[:s.head]
	if s.g.ep == chatEndpoint {
		b = append(b, `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"`...)
	} else {
		b = append(b, `"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"`...)
	}
	b = append(b, s.g.finish...)
	b = append(b, `"}]`...)
	b = s.end(b)
	if s.g.includeUsage {
		b = append(b, s.buf[:s.head]...)
		b = append(b, `"choices":[],"usage":`...)
		b = appendUsage(b, s.g.promptTokens, s.g.outputTokens, s.g.cachedTokens)
		b = append(b, "}\n\n"...)
	}
	b = append(b, "data: [DONE]\n\n"...)
	return s.write(b)
}

func (s *sseWriter) write(b []byte) error {
	// Keep a grown buffer for the next event.
	s.buf = b[:cap(b)][:s.head]
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	if s.flusher != nil {
		s.flusher.Flush()
	}
	return nil
}

// appendEmbeddings appends an OpenAI embeddings list for items, one unit
// vector of len(vec) dimensions each, as floats or as base64 of
// little-endian float32.
func appendEmbeddings(b []byte, model string, items []promptItem, vec []float32, b64 bool, promptTokens int) []byte {
	b = append(b, `{"object":"list","data":[`...)
	var raw []byte
	if b64 {
		raw = make([]byte, 0, 4*len(vec))
	}
	for i := range items {
		if i > 0 {
			b = append(b, ',')
		}
		unitVector(vec, itemSeed(model, &items[i]))
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		if b64 {
			raw = raw[:0]
			for _, f := range vec {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = appendFloats(b, vec)
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendJSONString(b, model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(promptTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(promptTokens), 10)
	return append(b, "}}\n"...)
}

// itemSeed is the hash an input's embedding is drawn from.
func itemSeed(model string, it *promptItem) uint64 {
	h := newHasher()
	h.string(model)
	h.sep()
	it.hash(&h)
	return h.sum()
}

// appendFloats appends v as a JSON array of shortest float32 decimals.
func appendFloats(b []byte, v []float32) []byte {
	b = append(b, '[')
	for i, f := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string, replacing invalid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// bufPool holds byte buffers for request bodies and responses.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf keeps rare large buffers out of the pool.
const maxPooledBuf = 256 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(p *[]byte, b []byte) {
	if cap(b) > maxPooledBuf {
		return
	}
	*p = b[:0]
	bufPool.Put(p)
}
