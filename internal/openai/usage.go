package openai

import (
	"encoding/json"
	"strings"
)

// Usage is the token count a backend reports for one response.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	// TotalTokens is the backend's total, or PromptTokens+CompletionTokens
	// when the backend leaves it out.
	TotalTokens int64
}

// maxUsageValue bounds the bytes kept of one "usage" value. Real usage
// objects are a few hundred bytes (with the *_tokens_details breakdowns);
// anything longer is not one and is ignored.
const maxUsageValue = 4 << 10

// UsageScanner finds the token usage in a response body while the body
// passes through, without keeping the body. Feed it every byte of the
// response, in order and in chunks of any size, with Write; then ask Usage.
//
// For a JSON body it finds the top-level "usage" member wherever it stands;
// for a server-sent event stream (text/event-stream) it looks at each event's
// data the same way and keeps the last non-null usage, which is where OpenAI
// reports it (the final chunk, when the request set
// stream_options.include_usage). Either way it holds at most one usage value
// (4 KiB) and a few words of parser state, however long the body, and the
// result does not depend on how the body is split into chunks.
//
// Both the OpenAI names (prompt_tokens, completion_tokens) and the Responses
// API names (input_tokens, output_tokens) are understood. The zero value is a
// scanner for a JSON body. A UsageScanner is not safe for concurrent use.
type UsageScanner struct {
	sse bool

	// Server-sent event line state.
	lineStart bool // at the first byte of a line
	field     int  // bytes of "data" matched at the start of this line; -1 when not a data line
	inData    bool // past "data:" on this line: bytes go to the JSON finder
	skipSpace bool // just past "data:": one leading space is not part of the value
	afterCR   bool // the previous byte was a CR, so a following LF ends nothing
	eventData bool // the current event has had a data line

	json jsonUsageFinder

	usage Usage
	found bool
}

// NewUsageScanner returns a scanner for a response with the given
// Content-Type: text/event-stream is read as server-sent events, anything
// else as JSON.
func NewUsageScanner(contentType string) *UsageScanner {
	s := &UsageScanner{}
	s.Reset(contentType)
	return s
}

// Reset readies s for a new response with the given Content-Type, keeping
// its buffer.
func (s *UsageScanner) Reset(contentType string) {
	buf := s.json.value[:0]
	*s = UsageScanner{}
	s.json.value = buf
	s.sse = isEventStream(contentType)
	s.lineStart = true
}

// isEventStream reports whether contentType's media type, before any
// parameters, is text/event-stream (case-insensitive, as media types are).
// It allocates nothing, unlike mime.ParseMediaType, which it runs once per
// response.
func isEventStream(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// Write scans p. It never fails and never keeps p.
func (s *UsageScanner) Write(p []byte) (int, error) {
	if !s.sse {
		s.json.feed(p)
		if u, ok := s.json.take(); ok {
			s.usage, s.found = u, true
		}
		return len(p), nil
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '\n' && s.afterCR {
			s.afterCR = false
			continue
		}
		s.afterCR = c == '\r'
		if c == '\n' || c == '\r' {
			s.endLine()
			continue
		}
		if s.inData {
			if s.skipSpace {
				s.skipSpace = false
				if c == ' ' {
					continue
				}
			}
			// Hand the rest of the line to the finder in one piece.
			j := i
			for j < len(p) && p[j] != '\n' && p[j] != '\r' {
				j++
			}
			s.json.feed(p[i:j])
			i = j - 1
			continue
		}
		s.fieldByte(c)
	}
	return len(p), nil
}

// fieldByte advances the match of the field name at the start of a line
// against "data:".
func (s *UsageScanner) fieldByte(c byte) {
	const name = "data"
	if s.lineStart {
		s.lineStart = false
		s.field = 0
	}
	switch {
	case s.field < 0:
	case s.field < len(name) && c == name[s.field]:
		s.field++
	case s.field == len(name) && c == ':':
		s.inData = true
		s.skipSpace = true
		if s.eventData {
			// Data lines of one event are joined by a newline, which
			// JSON reads as white space.
			s.json.feed(newline)
		}
		s.eventData = true
	default:
		s.field = -1
	}
}

var newline = []byte{'\n'}

// endLine handles a line terminator: a blank line ends the event.
func (s *UsageScanner) endLine() {
	if s.lineStart {
		s.endEvent()
		return
	}
	if !s.inData && s.field == len("data") {
		// A line reading just "data" is a data line with an empty value.
		if s.eventData {
			s.json.feed(newline)
		}
		s.eventData = true
	}
	s.lineStart = true
	s.inData = false
	s.field = 0
}

func (s *UsageScanner) endEvent() {
	if u, ok := s.json.take(); ok {
		s.usage, s.found = u, true
	}
	s.json.reset()
	s.eventData = false
}

// Usage returns the last usage seen, and whether there was one. For an event
// stream, usage in an event not yet ended by a blank line is included, so a
// stream cut right after its final data line still counts.
func (s *UsageScanner) Usage() (Usage, bool) {
	if s.sse && s.eventData {
		if u, ok := s.json.peek(); ok {
			return u, true
		}
	}
	return s.usage, s.found
}

// jsonUsageFinder is a push parser that tracks just enough of JSON's
// structure (nesting, strings, the member names of the top-level object) to
// capture the value of a top-level "usage" member, or of the "usage" member
// of a top-level "response" object (a Responses API stream reports usage in
// its response.completed event as {"type":..., "response":{..., "usage":
// {...}}}). It does not validate:
// input that is not JSON yields no usage, never an error. It works byte by
// byte (skipping through string contents in bulk), so how the input is
// split across feeds cannot change what it finds.
type jsonUsageFinder struct {
	depth     int
	topObject bool // the top-level value is an object
	inString  bool
	escaped   bool
	expectKey bool // at depth 1, or 2 inside "response", the next string is a member name
	inKey     bool
	key       [len("response")]byte
	keyLen    int  // bytes of the current name in key; -1 when it is none of the names looked for
	afterKey  bool // the current member is "usage" and its value has not begun
	afterResp bool // the current member is the top-level "response" and its value has not begun
	inResp    bool // inside the top-level "response" object
	capture   captureKind
	capDepth  int // the depth of the captured value's member
	overflow  bool
	value     []byte

	result Usage
	ready  bool // result holds a usage found since the last take
}

type captureKind uint8

const (
	captureNone     captureKind = iota
	captureString               // ends at its closing quote
	captureCompound             // an object or array: ends when depth is back to 1
	captureScalar               // a literal or number: ends before a delimiter
)

func (f *jsonUsageFinder) reset() {
	buf := f.value[:0]
	*f = jsonUsageFinder{value: buf}
}

func (f *jsonUsageFinder) feed(p []byte) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if f.capture == captureScalar && isDelimiter(c) {
			f.finishCapture()
		}
		if f.capture != captureNone {
			f.captureBytes(p[i : i+1])
		}
		if f.inString {
			switch {
			case f.escaped:
				f.escaped = false
				f.keyLen = -1
			case c == '\\':
				f.escaped = true
			case c == '"':
				f.inString = false
				if f.inKey {
					f.inKey = false
					f.endKey()
				} else if f.capture == captureString && f.depth == f.capDepth {
					f.finishCapture()
				}
			case f.inKey:
				if f.keyLen >= 0 && f.keyLen < len(f.key) {
					f.key[f.keyLen] = c
					f.keyLen++
				} else {
					f.keyLen = -1
				}
			default:
				// Skip through the string's plain bytes in bulk.
				j := i + 1
				for j < len(p) && p[j] != '"' && p[j] != '\\' {
					j++
				}
				if f.capture != captureNone {
					f.captureBytes(p[i+1 : j])
				}
				i = j - 1
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r', ':':
		case '"':
			f.inString = true
			if f.expectKey && (f.depth == 1 && f.topObject || f.depth == 2 && f.inResp) {
				f.inKey = true
				f.keyLen = 0
				f.expectKey = false
			} else {
				f.beginValue(captureString, c)
			}
		case '{', '[':
			f.beginValue(captureCompound, c)
			if f.depth == 0 {
				f.topObject = c == '{'
				f.expectKey = true
			}
			f.depth++
			if f.depth == 2 && f.inResp {
				f.expectKey = true
			}
		case '}', ']':
			if f.depth > 0 {
				f.depth--
			}
			if f.depth <= 1 {
				f.inResp = false
			}
			if f.capture == captureCompound && f.depth == f.capDepth {
				f.finishCapture()
			}
		case ',':
			if f.depth == 1 || f.depth == 2 && f.inResp {
				f.expectKey = true
			}
		default:
			if f.capture == captureNone {
				f.beginValue(captureScalar, c)
			}
		}
	}
}

// endKey notes which member the name just read begins.
func (f *jsonUsageFinder) endKey() {
	name := f.key[:max(f.keyLen, 0)]
	switch {
	case f.keyLen < 0:
	case string(name) == "usage":
		f.afterKey = true
	case f.depth == 1 && string(name) == "response":
		f.afterResp = true
	}
}

// beginValue notes the first byte c of a value; when it is the value of a
// "usage" member looked for, capture begins with it.
func (f *jsonUsageFinder) beginValue(kind captureKind, c byte) {
	if f.afterResp {
		f.afterResp = false
		f.inResp = f.depth == 1 && c == '{'
	}
	if !f.afterKey {
		return
	}
	f.afterKey = false
	if f.depth != 1 && !(f.depth == 2 && f.inResp) {
		return
	}
	f.capture, f.capDepth = kind, f.depth
	f.overflow = false
	if f.value == nil {
		// One allocation that fits a real usage object, details included,
		// instead of growing from nothing.
		f.value = make([]byte, 0, 512)
	}
	f.value = append(f.value[:0], c)
}

func (f *jsonUsageFinder) captureBytes(b []byte) {
	if room := maxUsageValue - len(f.value); len(b) > room {
		b = b[:room]
		f.overflow = true
	}
	f.value = append(f.value, b...)
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

func (f *jsonUsageFinder) finishCapture() {
	f.capture = captureNone
	if f.overflow {
		return
	}
	if u, ok := parseUsage(f.value); ok {
		f.result, f.ready = u, true
	}
}

// take returns a usage completed since the last take.
func (f *jsonUsageFinder) take() (Usage, bool) {
	if !f.ready {
		return Usage{}, false
	}
	f.ready = false
	return f.result, true
}

// peek is take without consuming.
func (f *jsonUsageFinder) peek() (Usage, bool) { return f.result, f.ready }

type wireUsage struct {
	PromptTokens     *int64 `json:"prompt_tokens"`
	CompletionTokens *int64 `json:"completion_tokens"`
	TotalTokens      *int64 `json:"total_tokens"`
	InputTokens      *int64 `json:"input_tokens"`
	OutputTokens     *int64 `json:"output_tokens"`
}

// usageFields are the members of a usage object that count, each with
// whether it was present (a null member is absent, as for encoding/json).
type usageFields struct {
	prompt, completion, total, input, output          int64
	hasPrompt, hasCompletion, hasTotal, hasIn, hasOut bool
}

// parseUsage reads a usage object. Real ones are flat objects of integers
// (with nested *_details objects), which scanUsage reads without
// allocating once the object is known to be valid JSON; anything it does
// not read exactly goes to encoding/json, so the result is encoding/json's
// either way (FuzzParseUsage holds the two to that).
func parseUsage(b []byte) (Usage, bool) {
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return Usage{}, false // null, not an object, or not JSON
	}
	f, ok := scanUsage(b)
	if !ok {
		if f, ok = decodeUsage(b); !ok {
			return Usage{}, false
		}
	}
	return usageOf(f)
}

// usageOf is the usage the counting members say.
func usageOf(f usageFields) (Usage, bool) {
	var u Usage
	switch {
	case f.hasPrompt || f.hasCompletion:
		u.PromptTokens, u.CompletionTokens = f.prompt, f.completion
	case f.hasIn || f.hasOut:
		u.PromptTokens, u.CompletionTokens = f.input, f.output
	default:
		if !f.hasTotal {
			return Usage{}, false
		}
		// Only a total, as vLLM's rerank and score report it: all of it
		// is input, so limits settle and the prompt count has it.
		u.PromptTokens = f.total
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if f.hasTotal {
		u.TotalTokens = f.total
	}
	if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens < 0 {
		return Usage{}, false
	}
	return u, true
}

// decodeUsage reads the counting members with encoding/json.
func decodeUsage(b []byte) (usageFields, bool) {
	var w wireUsage
	if err := json.Unmarshal(b, &w); err != nil {
		return usageFields{}, false
	}
	var f usageFields
	f.prompt, f.hasPrompt = deref(w.PromptTokens)
	f.completion, f.hasCompletion = deref(w.CompletionTokens)
	f.total, f.hasTotal = deref(w.TotalTokens)
	f.input, f.hasIn = deref(w.InputTokens)
	f.output, f.hasOut = deref(w.OutputTokens)
	return f, true
}

// countedMembers are the names scanUsage reads, in usageFields' order.
var countedMembers = [...]string{"prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens"}

// scanUsage reads the counting members of b, a valid JSON object, by
// hand. It reports false for what it does not read as encoding/json would:
// an escape in a member name, a name that matches a counting member only
// case-insensitively (encoding/json takes those too), a counting member
// that is neither an integer that fits int64 nor null.
func scanUsage(b []byte) (usageFields, bool) {
	var f usageFields
	nums := [...]*int64{&f.prompt, &f.completion, &f.total, &f.input, &f.output}
	has := [...]*bool{&f.hasPrompt, &f.hasCompletion, &f.hasTotal, &f.hasIn, &f.hasOut}
	i := skipSpace(b, 1)
	for i < len(b) && b[i] == '"' {
		end := i + 1
		for end < len(b) && b[end] != '"' && b[end] != '\\' {
			end++
		}
		if end >= len(b) || b[end] != '"' {
			return f, false
		}
		name := b[i+1 : end]
		i = skipSpace(b, end+1) + 1 // past the colon
		i = skipSpace(b, i)
		member := -1
		for k, c := range countedMembers {
			if string(name) == c {
				member = k
				break
			}
			if strings.EqualFold(string(name), c) {
				return f, false
			}
		}
		if member < 0 {
			i = skipValue(b, i)
		} else {
			var ok bool
			if i, ok = scanCount(b, i, nums[member], has[member]); !ok {
				return f, false
			}
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return f, true
}

// scanCount reads the integer or null at b[i:], valid JSON. A null leaves
// the member absent, as it leaves encoding/json's pointer nil.
func scanCount(b []byte, i int, n *int64, has *bool) (int, bool) {
	if b[i] == 'n' {
		*n, *has = 0, false
		return i + len("null"), true
	}
	neg := b[i] == '-'
	if neg {
		i++
	}
	start := i
	var v int64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := int64(b[i] - '0')
		if v > (1<<63-1-d)/10 {
			return i, false // does not fit: encoding/json says so
		}
		v = v*10 + d
	}
	if i == start || i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return i, false // not a number, or one with a fraction or an exponent
	}
	if neg {
		v = -v
	}
	*n, *has = v, true
	return i, true
}

// skipValue returns the index just past the JSON value at b[i:], valid
// JSON: a string, an object or array, or a literal or number.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func deref(p *int64) (int64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

// RequestInfo is what the gateway needs from an OpenAI-style request body.
type RequestInfo struct {
	// Model is the "model" field; "" when absent.
	Model string
	// Stream is the "stream" field.
	Stream bool
	// IncludeUsage is stream_options.include_usage: the backend will report
	// usage in the final chunk of a stream.
	IncludeUsage bool
	// MaxTokens is max_completion_tokens, or else max_tokens; 0 when neither
	// is set.
	MaxTokens int64
	// N is the number of choices asked for ("n"); 1 when absent.
	N int64
	// PromptBytes is the size of the JSON text of the fields that carry
	// input: messages, prompt, input, instructions, suffix, tools.
	PromptBytes int64
}

// bytesPerToken is the rough size of a token in JSON text: English averages
// about four characters per token, and JSON quoting and structure only make
// a prompt's text longer, so this overestimates, which is the safe side for
// a reservation that is settled later.
const bytesPerToken = 4

// PromptTokensEstimate is a cheap upper-leaning estimate of the prompt's
// tokens from PromptBytes.
func (ri RequestInfo) PromptTokensEstimate() int64 {
	return (ri.PromptBytes + bytesPerToken - 1) / bytesPerToken
}

// TokenReservation is the number of tokens to reserve against a tokens-per-
// minute limit before forwarding the request: the prompt estimate plus N
// times the completion budget, which is MaxTokens or, when the request sets
// none, defaultMaxTokens.
func (ri RequestInfo) TokenReservation(defaultMaxTokens int64) int64 {
	completion := ri.MaxTokens
	if completion <= 0 {
		completion = defaultMaxTokens
	}
	n := ri.N
	if n < 1 {
		n = 1
	}
	return ri.PromptTokensEstimate() + n*completion
}
