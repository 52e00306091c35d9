package kvroute

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// BlockBytes is the size of one prompt block: 128 bytes of the canonical
// prompt stream, about 32 tokens of English text.
//
// The gateway does not have the model's tokenizer, so blocks are cut in
// bytes, not tokens. What matters is that equal prompt prefixes give equal
// leading blocks, and byte blocks of a canonical stream guarantee that for
// any tokenizer. The block size only sets the resolution of the match (a
// shared prefix is credited to the last whole block) against the index's
// memory: 128 bytes keeps a 10k-token prompt at about 300 entries. It is a
// constant, not a setting, because every gateway sharing an index must cut
// alike.
const BlockBytes = 128

// DefaultMaxBlocks is the most blocks a prompt is hashed into (256 KiB of
// prompt, about 64k tokens); a longer prompt is routed by load alone.
const DefaultMaxBlocks = 2048

// Tags of the canonical prompt stream. Each JSON value is written as a tag
// byte and its content, so that different documents cannot give the same
// stream; strings end with 0x00 0x00 and a 0x00 inside one is written as
// 0x00 0x01.
const (
	tagString = 0x01
	tagLit    = 0x02 // numbers, true, false, null; ended by 0x00
	tagObject = 0x03
	tagEndObj = 0x04
	tagArray  = 0x05
	tagEndArr = 0x06
	tagField  = 0x07 // then the field's index in promptFields
)

// promptFields are the top-level fields of an OpenAI request body that make
// up the prompt the engine sees, in the order they are hashed (the order
// chat templates render them: model, tools, system instructions, then the
// conversation or prompt), whatever their order in the body. The model
// leads, so that two models of one pool never share blocks.
var promptFields = [...]string{"model", "tools", "instructions", "messages", "input", "prompt"}

// fieldModel is the index of "model"; a body with no field after it has no
// prompt.
const fieldModel = 0

// HashPrompt appends to dst[:0] the chained block hashes of the prompt in
// an OpenAI request body (chat completions' messages, completions' prompt,
// responses' input, with the model, tools and instructions before them) and
// returns the result. It allocates nothing when dst has room for
// maxBlocks hashes (maxBlocks <= 0 means DefaultMaxBlocks).
//
// The prompt is hashed as a canonical stream: the fields above in a fixed
// order, each JSON value re-encoded without whitespace and with escapes
// decoded (invalid UTF-8 and lone surrogates become U+FFFD, as
// encoding/json reads them), so two clients that format the same
// conversation differently still share blocks. The stream is cut into
// BlockBytes blocks; block i's hash is XXH64(hash of block i-1 ‖ block i),
// so a hash stands for the whole prefix up to its block's end, as in vLLM's
// prefix cache. A trailing partial block is not hashed: engines cache only
// whole blocks, and the next turn of a conversation changes it.
//
// The result is empty when the body is not a JSON object, has no prompt
// field, or its prompt is longer than maxBlocks blocks: such a request is
// routed by load alone.
func HashPrompt(body []byte, dst []uint64, maxBlocks int) []uint64 {
	dst = dst[:0]
	if maxBlocks <= 0 {
		maxBlocks = DefaultMaxBlocks
	}
	var spans [len(promptFields)]span
	if !findFields(body, &spans) {
		return dst
	}
	hasPrompt := false
	for f := fieldModel + 1; f < len(spans); f++ {
		hasPrompt = hasPrompt || spans[f].set
	}
	if !hasPrompt {
		return dst
	}
	c := chain{out: dst, max: maxBlocks}
	for f, sp := range spans {
		if !sp.set {
			continue
		}
		c.write2(tagField, byte(f))
		s := scanner{b: body[sp.start:sp.end], c: &c}
		if !s.value() || c.overflow {
			return dst[:0]
		}
	}
	return c.out
}

// HashText appends to dst[:0] the chained block hashes of raw prompt text,
// for callers that hold the text rather than a request body (the trace
// replayer). It is not the same stream as HashPrompt's for an equal prompt.
func HashText(text []byte, dst []uint64, maxBlocks int) []uint64 {
	if maxBlocks <= 0 {
		maxBlocks = DefaultMaxBlocks
	}
	c := chain{out: dst[:0], max: maxBlocks}
	c.write(text)
	if c.overflow {
		return dst[:0]
	}
	return c.out
}

// chain cuts a byte stream into blocks and appends each whole block's
// chained hash to out.
type chain struct {
	// buf holds the previous block's hash in its first 8 bytes, then the
	// block being filled.
	buf      [8 + BlockBytes]byte
	n        int // bytes of the current block in buf
	prev     uint64
	out      []uint64
	max      int
	overflow bool
}

func (c *chain) write(p []byte) {
	for len(p) > 0 && !c.overflow {
		k := copy(c.buf[8+c.n:], p)
		c.n += k
		p = p[k:]
		if c.n == BlockBytes {
			c.flush()
		}
	}
}

func (c *chain) write1(b byte) {
	if c.overflow {
		return
	}
	c.buf[8+c.n] = b
	c.n++
	if c.n == BlockBytes {
		c.flush()
	}
}

func (c *chain) write2(a, b byte) {
	c.write1(a)
	c.write1(b)
}

// writeStringBytes writes string content, escaping 0x00 so that it cannot
// be read as the string's end.
func (c *chain) writeStringBytes(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			c.write(p)
			return
		}
		c.write(p[:i])
		c.write2(0, 1)
		p = p[i+1:]
	}
}

func (c *chain) flush() {
	if len(c.out) >= c.max {
		c.overflow = true
		return
	}
	binary.LittleEndian.PutUint64(c.buf[:8], c.prev)
	c.prev = xxhash.Sum64(c.buf[:])
	c.out = append(c.out, c.prev)
	c.n = 0
}

type span struct {
	start, end int
	set        bool
}

// findFields checks that body is one JSON object and records where the
// value of each of promptFields is (the last one, for a repeated key, as
// encoding/json keeps).
func findFields(body []byte, spans *[len(promptFields)]span) bool {
	s := scanner{b: body}
	s.ws()
	if !s.eat('{') {
		return false
	}
	s.ws()
	if s.eat('}') {
		s.ws()
		return s.i == len(s.b)
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		kstart := s.i
		if !s.str() {
			return false
		}
		f := fieldIndex(body, kstart, s.i)
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		vstart := s.i
		if !s.value() {
			return false
		}
		if f >= 0 {
			spans[f] = span{start: vstart, end: s.i, set: true}
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return false
		}
		s.ws()
		return s.i == len(s.b)
	}
}

// fieldIndex returns the index in promptFields of the key whose string
// starts with the quote at body[at] and ends before body[end], or -1.
func fieldIndex(body []byte, at, end int) int {
	key := body[at+1 : end-1]
	var c chain
	for _, b := range key {
		if b == '\\' {
			// A key spelled with escapes: decode it into c.buf. Keys of
			// interest are short; a long one overflows c (max 0) and is
			// none of them.
			s := scanner{b: body, i: at + 1, c: &c}
			if s.strBody() < 0 || c.overflow {
				return -1
			}
			key = c.buf[8 : 8+c.n]
			break
		}
	}
	for i, f := range promptFields {
		if string(key) == f {
			return i
		}
	}
	return -1
}

// plain marks the bytes a string run copies as they are: not a quote, a
// backslash, a control character or the start of a multi-byte sequence.
var plain = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// maxDepth bounds nesting as encoding/json does.
const maxDepth = 10000

// scanner validates one JSON value and, when c is set, writes its canonical
// form to c. It reads the grammar of RFC 8259 exactly as encoding/json
// accepts it.
type scanner struct {
	b     []byte
	i     int
	c     *chain
	depth int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(b byte) bool {
	if s.i < len(s.b) && s.b[s.i] == b {
		s.i++
		return true
	}
	return false
}

func (s *scanner) emit1(b byte) {
	if s.c != nil {
		s.c.write1(b)
	}
}

func (s *scanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch b := s.b[s.i]; {
	case b == '{':
		return s.object()
	case b == '[':
		return s.array()
	case b == '"':
		return s.str()
	case b == '-' || (b >= '0' && b <= '9'):
		return s.number()
	case b == 't':
		return s.literal("true")
	case b == 'f':
		return s.literal("false")
	case b == 'n':
		return s.literal("null")
	}
	return false
}

func (s *scanner) object() bool {
	if s.depth++; s.depth > maxDepth {
		return false
	}
	s.i++
	s.emit1(tagObject)
	s.ws()
	if !s.eat('}') {
		for {
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != '"' || !s.str() {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			if !s.value() {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if !s.eat('}') {
				return false
			}
			break
		}
	}
	s.emit1(tagEndObj)
	s.depth--
	return true
}

func (s *scanner) array() bool {
	if s.depth++; s.depth > maxDepth {
		return false
	}
	s.i++
	s.emit1(tagArray)
	s.ws()
	if !s.eat(']') {
		for {
			s.ws()
			if !s.value() {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if !s.eat(']') {
				return false
			}
			break
		}
	}
	s.emit1(tagEndArr)
	s.depth--
	return true
}

func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	if s.c != nil {
		s.c.write1(tagLit)
		s.c.write(s.b[s.i : s.i+len(word)])
		s.c.write1(0)
	}
	s.i += len(word)
	return true
}

func (s *scanner) number() bool {
	start := s.i
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.digits() == 0:
		return false
	}
	if s.eat('.') && s.digits() == 0 {
		return false
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	if s.c != nil {
		s.c.write1(tagLit)
		s.c.write(s.b[start:s.i])
		s.c.write1(0)
	}
	return true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// str reads a string starting at its opening quote.
func (s *scanner) str() bool {
	s.i++
	s.emit1(tagString)
	if s.strBody() < 0 {
		return false
	}
	if s.c != nil {
		s.c.write2(0, 0)
	}
	return true
}

// strBody reads string content from s.i up to and including the closing
// quote, writing the decoded bytes to s.c. It returns the index after the
// string, or -1 if it is malformed.
func (s *scanner) strBody() int {
	limit := len(s.b)
	var rb [utf8.UTFMax]byte
	for {
		run := s.i
		for s.i < limit && plain[s.b[s.i]] {
			s.i++
		}
		if s.c != nil {
			s.c.writeStringBytes(s.b[run:s.i])
		}
		if s.i >= limit {
			return -1
		}
		switch b := s.b[s.i]; {
		case b == '"':
			s.i++
			return s.i
		case b < 0x20:
			return -1
		case b >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(s.b[s.i:limit])
			if r == utf8.RuneError && size == 1 {
				s.writeRune(&rb, utf8.RuneError)
			} else if s.c != nil {
				s.c.writeStringBytes(s.b[s.i : s.i+size])
			}
			s.i += size
		default: // backslash
			s.i++
			if s.i >= limit {
				return -1
			}
			e := s.b[s.i]
			s.i++
			switch e {
			case '"', '\\', '/':
				s.writeByte(e)
			case 'b':
				s.writeByte('\b')
			case 'f':
				s.writeByte('\f')
			case 'n':
				s.writeByte('\n')
			case 'r':
				s.writeByte('\r')
			case 't':
				s.writeByte('\t')
			case 'u':
				r, ok := s.hex4(limit)
				if !ok {
					return -1
				}
				if utf16IsSurrogate(r) {
					r = s.lowSurrogate(r, limit)
				}
				s.writeRune(&rb, r)
			default:
				return -1
			}
		}
	}
}

func (s *scanner) hex4(limit int) (rune, bool) {
	if limit-s.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.i += 4
	return r, true
}

// lowSurrogate completes the high surrogate r with a following \uDC00-
// \uDFFF escape, consuming it; otherwise it returns U+FFFD and leaves the
// input where it is, as encoding/json does.
func (s *scanner) lowSurrogate(r rune, limit int) rune {
	if r < 0xD800 || r >= 0xDC00 || limit-s.i < 6 || s.b[s.i] != '\\' || s.b[s.i+1] != 'u' {
		return utf8.RuneError
	}
	save := s.i
	s.i += 2
	r2, ok := s.hex4(limit)
	if !ok || r2 < 0xDC00 || r2 > 0xDFFF {
		s.i = save
		return utf8.RuneError
	}
	return (r-0xD800)<<10 | (r2 - 0xDC00) + 0x10000
}

func utf16IsSurrogate(r rune) bool { return r >= 0xD800 && r < 0xE000 }

func (s *scanner) writeByte(b byte) {
	if s.c != nil {
		if b == 0 {
			s.c.write2(0, 1)
			return
		}
		s.c.write1(b)
	}
}

func (s *scanner) writeRune(rb *[utf8.UTFMax]byte, r rune) {
	if s.c != nil {
		n := utf8.EncodeRune(rb[:], r)
		s.c.writeStringBytes(rb[:n])
	}
}
