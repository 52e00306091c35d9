package sim

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// vocabulary is what the simulated models say. Its length is a power of two
// so a hash picks a word with a mask.
var vocabulary = strings.Fields(`
the of and to in is was for on that with as by at from it his an were are
which this be or has had not first one their its new after but who they two
her she been other when time during there into school more years all up may
over would only most some made where world states state later city about
people such then through between these both known under while many part
three including used national year high since life also before same team
well work season against each century early united series until best called
number home side around local water music house area system place group
found several game second way song power small name even large public major
long back country family left another field born final became began four
king night north south east west light river young often point line land
form along church road human data open still street office based given due
club story upon across held period band film show common order death level
short below role head college near army language great middle summer winter
spring autumn stone green black white red blue gold silver paper model token
signal engine cloud queue batch stream vector replica cluster server client
request answer reason value table window market garden bridge forest ocean
island valley mountain energy matter planet orbit rocket motion theory
method result sample harbor castle letter circle simple bright quiet gentle
rapid ancient modern silent golden careful honest narrow steady hidden
distant
`)

const vocabMask = 255

// Vocabulary tokens in the three forms the writers need: bare, with a leading
// space, and each of those as a JSON string.
var (
	wordBare   [vocabMask + 1]string
	wordSpaced [vocabMask + 1]string
	jsonBare   [vocabMask + 1]string
	jsonSpaced [vocabMask + 1]string
)

func init() {
	if len(vocabulary) < vocabMask+1 {
		panic("sim: vocabulary shorter than its mask")
	}
	for i := range wordBare {
		w := vocabulary[i]
		wordBare[i] = w
		wordSpaced[i] = " " + w
		jsonBare[i] = `"` + w + `"`
		jsonSpaced[i] = `" ` + w + `"`
	}
}

// tokenIndex is the vocabulary index of output token i of a request whose
// content hash is h.
func tokenIndex(h uint64, i int) int {
	return int(mix64(h+uint64(i)*0x9e3779b97f4a7c15) & vocabMask)
}

// hasher is 64-bit FNV-1a, written out so that hashing a request allocates
// nothing.
type hasher uint64

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func newHasher() hasher { return fnvOffset }

func (h *hasher) byte(b byte) {
	*h = (*h ^ hasher(b)) * fnvPrime
}

func (h *hasher) string(s string) {
	for i := 0; i < len(s); i++ {
		h.byte(s[i])
	}
}

// sep marks a field boundary with a byte that never occurs in decoded JSON
// text (which is valid UTF-8), so that fields cannot run into each other.
func (h *hasher) sep() { h.byte(0xff) }

func (h *hasher) uint64(v uint64) {
	for range 8 {
		h.byte(byte(v))
		v >>= 8
	}
}

func (h hasher) sum() uint64 { return uint64(h) }

// mix64 is the SplitMix64 finalizer: a cheap bijection with good avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// countWords returns the number of maximal runs of non-space characters in
// s, as strings.Fields would split it, without allocating.
func countWords(s string) int {
	n := 0
	inWord := false
	for i := 0; i < len(s); {
		c := s[i]
		var space bool
		if c < utf8.RuneSelf {
			space = asciiSpace[c]
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			space = unicode.IsSpace(r)
			i += size
		}
		if !space && !inWord {
			n++
		}
		inWord = !space
	}
	return n
}

var asciiSpace = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// unitVector fills v with the deterministic unit vector of seed.
func unitVector(v []float32, seed uint64) {
	var sum float64
	x := seed
	for i := range v {
		x += 0x9e3779b97f4a7c15
		// A uniform draw in [-1, 1), never exactly zero everywhere.
		f := float64(int64(mix64(x))) / (1 << 63)
		v[i] = float32(f)
		sum += f * f
	}
	if sum == 0 {
		v[0], sum = 1, 1
	}
	inv := 1 / math.Sqrt(sum)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
}

// tokenizer turns a prompt into the sim's tokens: each maximal run of
// non-space characters (a word, as countWords counts them) is one token
// whose id is the FNV-1a hash of its bytes, and a prompt given as token ids
// has those ids. It counts the tokens and, when size > 0, appends to blocks
// the hash of every full block of size tokens, chained from the prompt's
// start: block i hashes block i−1's hash and its own token ids in order, so
// two prompts share block i exactly when their first (i+1)×size tokens are
// equal. Equal text therefore gives equal blocks wherever it is sent.
type tokenizer struct {
	size   int
	tokens int
	n      int    // tokens in the current block
	state  uint64 // hash of the current block so far
	blocks []uint64
}

// blockSeed is the chain's root, the hash "before" the first block.
const blockSeed = 0x6a09e667f3bcc908

func newTokenizer(size int, blocks []uint64) tokenizer {
	return tokenizer{size: size, state: blockSeed, blocks: blocks[:0]}
}

// token adds one token id.
func (t *tokenizer) token(id uint64) {
	t.tokens++
	if t.size <= 0 {
		return
	}
	t.state = mix64(t.state ^ id)
	t.n++
	if t.n == t.size {
		t.blocks = append(t.blocks, t.state)
		t.n = 0
	}
}

// mark mixes a boundary that is not a token (a chat message's role) into
// the current block, so that prompts equal in words but not in structure
// get different blocks.
func (t *tokenizer) mark(s string) {
	if t.size <= 0 {
		return
	}
	h := newHasher()
	h.sep()
	h.string(s)
	t.state = mix64(t.state ^ h.sum())
}

// text adds the words of s.
func (t *tokenizer) text(s string) {
	if t.size <= 0 {
		t.tokens += countWords(s)
		return
	}
	h := newHasher()
	inWord := false
	for i := 0; i < len(s); {
		c := s[i]
		var space bool
		size := 1
		if c < utf8.RuneSelf {
			space = asciiSpace[c]
		} else {
			var r rune
			r, size = utf8.DecodeRuneInString(s[i:])
			space = unicode.IsSpace(r)
		}
		switch {
		case space && inWord:
			t.token(h.sum())
			inWord = false
		case !space:
			if !inWord {
				h = newHasher()
				inWord = true
			}
			for j := i; j < i+size; j++ {
				h.byte(s[j])
			}
		}
		i += size
	}
	if inWord {
		t.token(h.sum())
	}
}
