package bench

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Trace formats LoadTrace reads.
const (
	// TraceMooncake is the Mooncake trace format (FAST'25 release): one
	// JSON object per line, {"timestamp": ms, "input_length": tokens,
	// "output_length": tokens, "hash_ids": [ids]}, where hash_id i stands for
	// prompt tokens [512i, 512(i+1)) and equal ids are equal text.
	TraceMooncake = "mooncake"
	// TraceAzure is the Azure LLM inference trace format (2023, 2024): CSV
	// with a header naming TIMESTAMP, ContextTokens and GeneratedTokens,
	// timestamps as "2006-01-02 15:04:05.9999999".
	TraceAzure = "azure"
)

// MooncakeBlockTokens is the number of prompt tokens one Mooncake hash_id
// stands for.
const MooncakeBlockTokens = 512

// Limits on one trace request, so a hostile file cannot make bench build
// unbounded prompts.
const (
	maxTraceTokens  = 10_000_000
	maxTraceHashIDs = maxTraceTokens / MooncakeBlockTokens
	maxTraceLine    = 16 << 20
	maxTraceAt      = 366 * 24 * time.Hour
	azureTimeLayout = "2006-01-02 15:04:05"
)

// TraceRequest is one request of a trace, as the trace gives it.
type TraceRequest struct {
	// At is the request's arrival, from the trace's first request (or from
	// TraceOptions.Start once loaded).
	At time.Duration
	// InputTokens and OutputTokens are the trace's prompt and output
	// lengths in tokens, before any scaling.
	InputTokens, OutputTokens int
	// HashIDs are a Mooncake request's prompt blocks; nil for Azure.
	HashIDs []int64
}

// Session is the conversation a request belongs to, "" when the trace does
// not say: for Mooncake, every block after the first (a system prompt all
// requests share) is unique to one conversation, so requests whose second
// hash_id is equal are turns of one conversation.
func (r *TraceRequest) Session() string {
	if len(r.HashIDs) < 2 {
		return ""
	}
	return "mooncake-" + strconv.FormatInt(r.HashIDs[1], 10)
}

// TraceOptions select and scale what LoadTrace keeps of a trace file.
type TraceOptions struct {
	// Format is TraceMooncake or TraceAzure. Empty: detected from the
	// content (a JSON object first means Mooncake).
	Format string
	// TokenScale multiplies every token count of the trace (prompt and
	// output lengths, and the 512 tokens of a Mooncake block), rounding to
	// the nearest token and keeping at least one: 0.125 sends prompts an
	// eighth as long. Zero: 1.
	TokenScale float64
	// Start skips the requests that arrive before it (from the trace's
	// first request); the kept requests' times count from Start. Default 0.
	Start time.Duration
	// Window keeps only requests arriving before Start+Window. Zero: to the
	// end of the trace.
	Window time.Duration
	// Limit keeps at most the first Limit requests after Start. Zero: all.
	Limit int
}

// Trace is a loaded, selected trace: what Config.Trace replays.
type Trace struct {
	// Path is the file it was loaded from, "" when parsed from a reader.
	Path string
	// Format is TraceMooncake or TraceAzure.
	Format string
	// TokenScale is the scaling applied when requests are built (see
	// TraceOptions.TokenScale); never zero.
	TokenScale float64
	// Requests are in arrival order.
	Requests []TraceRequest
}

// LoadTrace reads the trace at path and keeps what opts select.
func LoadTrace(path string, opts TraceOptions) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer f.Close()
	t, err := ReadTrace(f, opts)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	t.Path = path
	return t, nil
}

// ReadTrace is LoadTrace from a reader.
func ReadTrace(r io.Reader, opts TraceOptions) (*Trace, error) {
	if opts.TokenScale == 0 {
		opts.TokenScale = 1
	}
	switch {
	case !(opts.TokenScale > 0 && opts.TokenScale <= 1000):
		return nil, fmt.Errorf("token scale %v: must be above 0 and at most 1000", opts.TokenScale)
	case opts.Start < 0 || opts.Window < 0 || opts.Limit < 0:
		return nil, errors.New("start, window and limit must not be negative")
	}
	br := bufio.NewReader(r)
	format := opts.Format
	if format == "" {
		format = TraceAzure
		for {
			b, err := br.ReadByte()
			if err != nil {
				break
			}
			if b == ' ' || b == '\t' || b == '\r' || b == '\n' {
				continue
			}
			if b == '{' {
				format = TraceMooncake
			}
			_ = br.UnreadByte()
			break
		}
	}
	var (
		reqs []TraceRequest
		err  error
	)
	switch format {
	case TraceMooncake:
		reqs, err = ParseMooncake(br)
	case TraceAzure:
		reqs, err = ParseAzure(br)
	default:
		return nil, fmt.Errorf("format %q: must be %s or %s", format, TraceMooncake, TraceAzure)
	}
	if err != nil {
		return nil, err
	}
	kept := reqs[:0]
	for _, q := range reqs {
		if q.At < opts.Start || (opts.Window > 0 && q.At-opts.Start >= opts.Window) {
			continue
		}
		if opts.Limit > 0 && len(kept) == opts.Limit {
			break
		}
		q.At -= opts.Start
		kept = append(kept, q)
	}
	return &Trace{Format: format, TokenScale: opts.TokenScale, Requests: kept}, nil
}

// mooncakeLine is one line of a Mooncake trace; pointers tell a missing
// field from a zero.
type mooncakeLine struct {
	Timestamp    *float64 `json:"timestamp"`
	InputLength  *int     `json:"input_length"`
	OutputLength *int     `json:"output_length"`
	HashIDs      []int64  `json:"hash_ids"`
}

// ParseMooncake reads a Mooncake JSONL trace. Blank lines are skipped;
// any other line that is not a well-formed request is an error naming its
// line. Requests come back in arrival order (stable for equal times), with
// At counted from the earliest one.
func ParseMooncake(r io.Reader) ([]TraceRequest, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTraceLine)
	var out []TraceRequest
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var m mooncakeLine
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		q, err := m.request()
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, q)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxTraceLine)
		}
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return ordered(out)
}

func (m *mooncakeLine) request() (TraceRequest, error) {
	switch {
	case m.Timestamp == nil:
		return TraceRequest{}, errors.New("no timestamp")
	case m.InputLength == nil:
		return TraceRequest{}, errors.New("no input_length")
	case m.OutputLength == nil:
		return TraceRequest{}, errors.New("no output_length")
	}
	ts, in, out := *m.Timestamp, *m.InputLength, *m.OutputLength
	at, err := traceTime(ts)
	if err != nil {
		return TraceRequest{}, fmt.Errorf("timestamp %v: %w", ts, err)
	}
	if in < 1 || in > maxTraceTokens {
		return TraceRequest{}, fmt.Errorf("input_length %d: must be between 1 and %d", in, maxTraceTokens)
	}
	if out < 0 || out > maxTraceTokens {
		return TraceRequest{}, fmt.Errorf("output_length %d: must be between 0 and %d", out, maxTraceTokens)
	}
	if want := (in + MooncakeBlockTokens - 1) / MooncakeBlockTokens; len(m.HashIDs) != want {
		return TraceRequest{}, fmt.Errorf("%d hash_ids for input_length %d: want %d (one per %d tokens)",
			len(m.HashIDs), in, want, MooncakeBlockTokens)
	}
	return TraceRequest{At: at, InputTokens: in, OutputTokens: out, HashIDs: m.HashIDs}, nil
}

// ParseAzure reads an Azure LLM inference trace: CSV whose header names
// TIMESTAMP, ContextTokens and GeneratedTokens (in any order, any case,
// other columns ignored). A malformed row is an error naming its line.
// Requests come back in arrival order with At counted from the earliest.
func ParseAzure(r io.Reader) ([]TraceRequest, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, errors.New("line 1: no header")
	}
	if err != nil {
		return nil, err
	}
	col := map[string]int{"timestamp": -1, "contexttokens": -1, "generatedtokens": -1}
	for i, name := range header {
		key := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(name, "\ufeff")))
		if _, ok := col[key]; ok {
			col[key] = i
		}
	}
	for _, name := range []string{"timestamp", "contexttokens", "generatedtokens"} {
		if col[name] < 0 {
			return nil, fmt.Errorf("line 1: header %q has no %s column (want TIMESTAMP,ContextTokens,GeneratedTokens)",
				strings.Join(header, ","), name)
		}
	}
	need := max(col["timestamp"], col["contexttokens"], col["generatedtokens"]) + 1

	var (
		out   []TraceRequest
		times []time.Time
		lines []int
		first time.Time
	)
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err // a csv.ParseError names its line
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) < need {
			return nil, fmt.Errorf("line %d: %d fields, want at least %d", line, len(rec), need)
		}
		ts, err := time.Parse(azureTimeLayout, strings.TrimSpace(rec[col["timestamp"]]))
		if err != nil {
			return nil, fmt.Errorf("line %d: TIMESTAMP: %w", line, err)
		}
		in, err := traceTokens(rec[col["contexttokens"]], 1)
		if err != nil {
			return nil, fmt.Errorf("line %d: ContextTokens: %w", line, err)
		}
		gen, err := traceTokens(rec[col["generatedtokens"]], 0)
		if err != nil {
			return nil, fmt.Errorf("line %d: GeneratedTokens: %w", line, err)
		}
		if len(out) == 0 || ts.Before(first) {
			first = ts
		}
		out = append(out, TraceRequest{InputTokens: in, OutputTokens: gen})
		times = append(times, ts)
		lines = append(lines, line)
	}
	for i, ts := range times {
		d := ts.Sub(first)
		if d > maxTraceAt {
			return nil, fmt.Errorf("line %d: TIMESTAMP %s is more than %v after the first request", lines[i], ts, maxTraceAt)
		}
		out[i].At = d
	}
	return ordered(out)
}

func traceTokens(s string, least int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	if n < least || n > maxTraceTokens {
		return 0, fmt.Errorf("%d: must be between %d and %d", n, least, maxTraceTokens)
	}
	return n, nil
}

// traceTime converts milliseconds to a duration within the bounds of a
// trace, to the nearest nanosecond.
func traceTime(ms float64) (time.Duration, error) {
	if math.IsNaN(ms) || ms < 0 || ms > float64(maxTraceAt/time.Millisecond) {
		return 0, fmt.Errorf("must be between 0 and %v", maxTraceAt)
	}
	return time.Duration(math.Round(ms * float64(time.Millisecond))), nil
}

// ordered sorts requests by arrival (stable) and counts times from the
// earliest.
func ordered(reqs []TraceRequest) ([]TraceRequest, error) {
	if len(reqs) == 0 {
		return nil, errors.New("no requests")
	}
	slices.SortStableFunc(reqs, func(a, b TraceRequest) int {
		switch {
		case a.At < b.At:
			return -1
		case a.At > b.At:
			return 1
		}
		return 0
	})
	base := reqs[0].At
	for i := range reqs {
		reqs[i].At -= base
	}
	return reqs, nil
}

// Span is the arrival time of the last request.
func (t *Trace) Span() time.Duration {
	if len(t.Requests) == 0 {
		return 0
	}
	return t.Requests[len(t.Requests)-1].At
}

// scaled applies the token scale to n tokens, keeping at least one.
func (t *Trace) scaled(n int) int {
	return max(int(math.Round(float64(n)*t.TokenScale)), 1)
}

// BlockWords is the number of words one Mooncake hash_id expands to: 512
// scaled by TokenScale. Choose a TokenScale that makes it a multiple of the
// server's KV block size (16 for vLLM and sluice sim: TokenScale 1/8 gives
// 64) so trace blocks line up with server blocks.
func (t *Trace) BlockWords() int { return t.scaled(MooncakeBlockTokens) }

// PromptWords is the prompt length of request i after scaling. For
// Mooncake it is kept within the request's blocks: more than all but the
// last, at most all.
func (t *Trace) PromptWords(i int) int {
	q := &t.Requests[i]
	n := t.scaled(q.InputTokens)
	if k := len(q.HashIDs); k > 0 {
		bw := t.BlockWords()
		n = min(max(n, (k-1)*bw+1), k*bw)
	}
	return n
}

// OutputTokens is max_tokens of request i after scaling.
func (t *Trace) OutputTokens(i int) int { return t.scaled(t.Requests[i].OutputTokens) }

// AppendPrompt appends the prompt of request i to dst: PromptWords(i)
// words from bench's word list (see Prompt), joined by single spaces, which
// need no JSON escaping. A Mooncake request's text is the text of its
// hash_ids in order, each id always expanding to the same BlockWords words
// (the last block cut short), so requests that share leading hash_ids share
// a textual prefix, in this run and any other with the same TokenScale. An
// Azure request gets Prompt(dst, seed, i, n): distinct per request.
func (t *Trace) AppendPrompt(dst []byte, i int, seed uint64) []byte {
	q := &t.Requests[i]
	n := t.PromptWords(i)
	if len(q.HashIDs) == 0 {
		return Prompt(dst, seed, uint64(i), n)
	}
	bw := t.BlockWords()
	for b, id := range q.HashIDs {
		for w := range min(bw, n-b*bw) {
			if b > 0 || w > 0 {
				dst = append(dst, ' ')
			}
			dst = append(dst, words[byte(mix(uint64(id)*0x9e3779b97f4a7c15^mix(uint64(w))))]...)
		}
	}
	return dst
}

// TokenReuseBound is BlockReuseBound counted in the prompt words bench
// sends (after TokenScale, with each request's last block cut short): the
// cached-token ratio one infinite prefix cache keyed on whole trace blocks
// would report, the figure Result.CachedTokenRatio compares with. A server
// caching smaller blocks can exceed it slightly, where a partial last
// block is a prefix of a later request's full one; one that always
// computes a prompt's last token stays slightly below it.
func (t *Trace) TokenReuseBound() float64 {
	seen := make(map[int64]struct{})
	total, reused := 0, 0
	bw := t.BlockWords()
	for i := range t.Requests {
		n := t.PromptWords(i)
		for b, id := range t.Requests[i].HashIDs {
			w := min(bw, n-b*bw)
			total += w
			if _, ok := seen[id]; ok {
				reused += w
			} else {
				seen[id] = struct{}{}
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(reused) / float64(total)
}

// BlockReuseBound is the share of the kept requests' Mooncake blocks
// (hash_ids) that an earlier kept request already sent: the prefix-cache
// hit ratio one infinite cache would reach on this selection, counted in
// trace blocks. Zero for a trace without hash_ids.
func (t *Trace) BlockReuseBound() float64 {
	seen := make(map[int64]struct{})
	total, reused := 0, 0
	for i := range t.Requests {
		for _, id := range t.Requests[i].HashIDs {
			total++
			if _, ok := seen[id]; ok {
				reused++
			} else {
				seen[id] = struct{}{}
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(reused) / float64(total)
}
