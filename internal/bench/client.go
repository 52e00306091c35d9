package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// outcome is what one request produced. Outcomes are pooled: reset clears
// one for reuse and keeps its itl buffer.
type outcome struct {
	// status is the HTTP status; 0 when none arrived.
	status int
	// kind is the error kind (KindConnect, ...) of a failure, "" otherwise.
	kind string
	// canceled marks a request cut off because the run was interrupted.
	canceled bool
	// latency runs from the intended send time to the last byte.
	latency time.Duration
	// ttft runs from the intended send time to the first content chunk; -1
	// when the response was not a stream.
	ttft time.Duration
	// itl holds the gaps between successive content chunks.
	itl []time.Duration
	// outTokens and inTokens are the completion and prompt tokens, from the
	// response's usage when present; cachedTokens is the prompt tokens the
	// server's prefix cache held (usage.prompt_tokens_details.cached_tokens).
	outTokens, inTokens, cachedTokens int64
	// instance is the X-Sim-Instance response header: which replica
	// answered.
	instance string
	// done is when the request finished.
	done time.Time
}

// meanITL is the mean of the request's inter-token gaps, zero without any.
func (o *outcome) meanITL() time.Duration {
	if len(o.itl) == 0 {
		return 0
	}
	var sum time.Duration
	for _, g := range o.itl {
		sum += g
	}
	return sum / time.Duration(len(o.itl))
}

func (o *outcome) ok() bool {
	return o.kind == "" && !o.canceled && o.status >= 200 && o.status < 300
}

func (o *outcome) reset() {
	*o = outcome{itl: o.itl[:0], ttft: -1}
}

var outcomePool = sync.Pool{New: func() any { return &outcome{ttft: -1} }}

var ssePool = sync.Pool{New: func() any { return newSSEReader(nil) }}

// usage is the OpenAI token accounting object.
type usage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// fill copies the usage into o.
func (u *usage) fill(o *outcome) {
	o.outTokens, o.inTokens = u.CompletionTokens, u.PromptTokens
	if u.PromptTokensDetails != nil {
		o.cachedTokens = u.PromptTokensDetails.CachedTokens
	}
}

// InstanceHeader is the response header that names the replica that
// answered (sluice sim sends it); Result.Replicas counts its values.
const InstanceHeader = "X-Sim-Instance"

// streamChunk is the part of a streamed chat or text completion chunk bench
// reads. Text is only tested for presence, so it is not copied out.
type streamChunk struct {
	Choices []struct {
		Delta struct {
			Content          nonEmpty `json:"content"`
			ReasoningContent nonEmpty `json:"reasoning_content"`
		} `json:"delta"`
		Text nonEmpty `json:"text"`
	} `json:"choices"`
	Usage *usage          `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// decode parses data into c, reusing c's choices.
func (c *streamChunk) decode(data []byte) error {
	// Unmarshal reuses a slice's spare capacity without zeroing it.
	choices := c.Choices[:cap(c.Choices)]
	clear(choices)
	*c = streamChunk{Choices: choices[:0]}
	return json.Unmarshal(data, c)
}

// hasContent reports whether the chunk carries generated text, which is what
// time to first token and inter-token latency are measured on (a leading
// role-only chunk or a trailing usage chunk does not count).
func (c *streamChunk) hasContent() bool {
	for i := range c.Choices {
		ch := &c.Choices[i]
		if ch.Delta.Content || ch.Delta.ReasoningContent || ch.Text {
			return true
		}
	}
	return false
}

// nonEmpty decodes a JSON value into whether it is a non-empty string,
// without allocating the string.
type nonEmpty bool

// UnmarshalJSON implements json.Unmarshaler; b is a valid JSON value.
func (n *nonEmpty) UnmarshalJSON(b []byte) error {
	*n = len(b) > 2 && b[0] == '"'
	return nil
}

// fullResponse is the part of a non-streamed completion or embeddings
// response bench reads.
type fullResponse struct {
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Text string `json:"text"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

// requestBody builds request bodies for one run: a fixed prefix, the
// prompt, the end of the prompt's string, max_tokens, a fixed tail.
type requestBody struct {
	prefix, closing, tail []byte
	seed                  uint64
	words                 int
	maxTokens             int
	// withMaxTokens is false for embeddings.
	withMaxTokens bool
	// trace, when set, gives each request its prompt and max_tokens.
	trace *Trace
	// fixed, when set, is the one body every request sends (RepeatPrompt).
	fixed []byte
}

func newRequestBody(cfg *Config) *requestBody {
	model, _ := json.Marshal(cfg.Model) // a string always marshals
	b := &requestBody{
		seed:          cfg.Seed,
		words:         cfg.PromptTokens,
		maxTokens:     cfg.MaxTokens,
		withMaxTokens: cfg.Endpoint != EndpointEmbeddings,
		trace:         cfg.Trace,
	}
	var stream string
	if cfg.Stream {
		stream = `,"stream":true,"stream_options":{"include_usage":true}`
	}
	switch cfg.Endpoint {
	case EndpointChat:
		b.prefix = fmt.Appendf(nil, `{"model":%s,"messages":[{"role":"user","content":"`, model)
		b.closing = []byte(`"}]`)
	case EndpointCompletions:
		b.prefix = fmt.Appendf(nil, `{"model":%s,"prompt":"`, model)
		b.closing = []byte(`"`)
	case EndpointEmbeddings:
		b.prefix = fmt.Appendf(nil, `{"model":%s,"input":"`, model)
		b.closing = []byte(`"`)
	}
	b.tail = fmt.Appendf(nil, `%s}`, stream)
	if cfg.RepeatPrompt && b.trace == nil {
		b.fixed = b.build(0)
	}
	return b
}

// forRequest returns the body of request index. The prompt words need no
// JSON escaping.
func (b *requestBody) forRequest(index uint64) []byte {
	if b.fixed != nil {
		return b.fixed
	}
	return b.build(index)
}

func (b *requestBody) build(index uint64) []byte {
	words, maxTokens := b.words, b.maxTokens
	if b.trace != nil {
		words, maxTokens = b.trace.PromptWords(int(index)), b.trace.OutputTokens(int(index))
	}
	buf := make([]byte, 0, len(b.prefix)+len(b.closing)+len(b.tail)+words*8+32)
	buf = append(buf, b.prefix...)
	if b.trace != nil {
		buf = b.trace.AppendPrompt(buf, int(index), b.seed)
	} else {
		buf = Prompt(buf, b.seed, index, words)
	}
	buf = append(buf, b.closing...)
	if b.withMaxTokens {
		buf = append(buf, `,"max_tokens":`...)
		buf = strconv.AppendInt(buf, int64(maxTokens), 10)
	}
	return append(buf, b.tail...)
}

// client sends one run's requests.
type client struct {
	http   *http.Client
	target string
	header http.Header
	host   string
	body   *requestBody
	stream bool
	// trace and sessionHeader send trace requests' session ids.
	trace         *Trace
	sessionHeader string
	// promptWords stands in for prompt tokens when a response has no usage.
	promptWords int64
	timeout     time.Duration
}

func newClient(cfg *Config, rt http.RoundTripper) *client {
	h := http.Header{
		"Content-Type": {"application/json"},
		"User-Agent":   {"sluice-bench"},
	}
	if cfg.Stream {
		h.Set("Accept", "text/event-stream")
	}
	if cfg.APIKey != "" {
		h.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	var host string
	for k, vs := range cfg.Header {
		k = http.CanonicalHeaderKey(k)
		if k == "Host" {
			if len(vs) > 0 {
				host = vs[len(vs)-1]
			}
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	return &client{
		http: &http.Client{
			Transport: rt,
			// A redirect is the server's answer, counted by its status.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		target:        cfg.URL,
		header:        h,
		host:          host,
		body:          newRequestBody(cfg),
		stream:        cfg.Stream,
		trace:         cfg.Trace,
		sessionHeader: cfg.SessionHeader,
		promptWords:   int64(cfg.PromptTokens),
		timeout:       cfg.Timeout,
	}
}

// newTransport returns a transport that keeps up to conns connections alive,
// never compresses and ignores proxy settings, so that what is measured is
// the server.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
	}
}

// do sends request index, whose intended send time is intended, and fills o.
// Every time in o is measured from intended, so time the request spent
// waiting to be sent counts against the server like time spent in it.
func (c *client) do(ctx context.Context, index uint64, intended time.Time, o *outcome) {
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fail := func(err error) {
		o.done = time.Now()
		switch {
		case ctx.Err() != nil:
			o.canceled = true
		case errors.Is(reqCtx.Err(), context.DeadlineExceeded) || isTimeout(err):
			o.kind = KindTimeout
		case isConnect(err):
			o.kind = KindConnect
		default:
			o.kind = KindOther
		}
	}

	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.target, bytes.NewReader(c.body.forRequest(index)))
	if err != nil {
		fail(err)
		return
	}
	// Shared by every request: the transport only reads it.
	req.Header = c.header
	if c.trace != nil {
		if session := c.trace.Requests[index].Session(); session != "" {
			req.Header = c.header.Clone()
			req.Header.Set(c.sessionHeader, session)
		}
	}
	if c.host != "" {
		req.Host = c.host
	}
	resp, err := c.http.Do(req)
	if err != nil {
		fail(err)
		return
	}
	defer resp.Body.Close()
	o.status = resp.StatusCode
	if v := resp.Header[InstanceHeader]; len(v) > 0 {
		o.instance = v[0]
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			fail(err)
			return
		}
		o.done = time.Now()
		return
	}
	// The prompt's length stands in for usage the response lacks.
	o.inTokens = c.promptWords
	if c.trace != nil {
		o.inTokens = int64(c.trace.PromptWords(int(index)))
	}
	if c.stream && isEventStream(resp.Header.Get("Content-Type")) {
		err = c.readStream(resp.Body, intended, o)
	} else {
		err = c.readFull(resp.Body, o)
	}
	if err != nil {
		fail(err)
		return
	}
	o.latency = o.done.Sub(intended)
}

// errBadResponse marks a 2xx response bench could not understand.
var errBadResponse = errors.New("bad response")

// readStream reads an SSE response to its "[DONE]" and records the timings
// of its content chunks; o.done is set when "[DONE]" arrives.
func (c *client) readStream(body io.Reader, intended time.Time, o *outcome) error {
	sr := ssePool.Get().(*sseReader)
	sr.reset(body)
	defer func() {
		sr.reset(nil)
		ssePool.Put(sr)
	}()
	var (
		last   time.Time
		chunks int64
		u      *usage
		chunk  streamChunk
	)
	for {
		event, data, err := sr.Next()
		now := time.Now()
		if err == io.EOF {
			return fmt.Errorf("stream ended without [DONE]: %w", errBadResponse)
		}
		if err != nil {
			return err
		}
		if string(event) == "error" {
			return fmt.Errorf("error event %.200q: %w", data, errBadResponse)
		}
		if bytes.Equal(data, doneMarker) {
			o.done = now
			break
		}
		if err := chunk.decode(data); err != nil {
			return fmt.Errorf("chunk: %w: %w", err, errBadResponse)
		}
		if len(chunk.Error) > 0 && !bytes.Equal(chunk.Error, jsonNull) {
			return fmt.Errorf("stream error %.200s: %w", chunk.Error, errBadResponse)
		}
		if chunk.Usage != nil {
			u = chunk.Usage
		}
		if !chunk.hasContent() {
			continue
		}
		if chunks == 0 {
			o.ttft = now.Sub(intended)
		} else {
			o.itl = append(o.itl, now.Sub(last))
		}
		last = now
		chunks++
	}
	// Whatever follows [DONE] is read so the connection can be reused.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return err
	}
	o.outTokens = chunks
	if u != nil {
		u.fill(o)
	}
	return nil
}

var (
	doneMarker = []byte("[DONE]")
	jsonNull   = []byte("null")
)

// readFull reads a whole JSON response; o.done is set at its last byte.
func (c *client) readFull(body io.Reader, o *outcome) error {
	var r fullResponse
	if err := json.NewDecoder(body).Decode(&r); err != nil {
		return fmt.Errorf("body: %w: %w", err, errBadResponse)
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return err
	}
	o.done = time.Now()
	if r.Usage != nil {
		r.Usage.fill(o)
		return nil
	}
	for i := range r.Choices {
		o.outTokens += countWords(r.Choices[i].Message.Content) + countWords(r.Choices[i].Text)
	}
	return nil
}

// countWords counts whitespace-separated words, the stand-in for output
// tokens when a response reports no usage.
func countWords(s string) int64 {
	var n int64
	in := false
	for i := 0; i < len(s); i++ {
		space := s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'
		if !space && !in {
			n++
		}
		in = !space
	}
	return n
}

func isEventStream(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isConnect(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}
