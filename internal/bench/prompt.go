package bench

// words are common English words that real tokenizers keep whole, so a prompt
// of N of them costs about N tokens there too. There are exactly 256, so a
// byte picks one.
var words = [256]string{
	"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
	"he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
	"one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
	"she", "other", "its", "may", "these", "what", "them", "than", "some", "him", "time", "into", "only", "do", "could", "new",
	"about", "two", "then", "first", "any", "like", "my", "now", "over", "such", "our", "man", "me", "even", "most", "made",
	"after", "also", "did", "many", "before", "must", "through", "back", "years", "where", "much", "your", "way", "well", "down", "should",
	"because", "each", "just", "those", "people", "how", "too", "little", "state", "good", "very", "make", "world", "still", "own", "see",
	"men", "work", "long", "get", "here", "between", "both", "life", "being", "under", "never", "day", "same", "another", "know", "while",
	"last", "might", "us", "great", "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take", "three",
	"states", "himself", "few", "house", "use", "during", "without", "again", "place", "around", "however", "home", "small", "found", "thought", "went",
	"say", "part", "once", "general", "high", "upon", "school", "every", "open", "does", "got", "united", "left", "number", "course", "war",
	"until", "always", "away", "something", "fact", "though", "water", "less", "public", "put", "think", "almost", "hand", "enough", "far", "took",
	"head", "yet", "government", "system", "better", "set", "told", "nothing", "night", "end", "why", "called", "kind", "eyes", "find", "going",
	"look", "asked", "later", "knew", "point", "next", "program", "city", "business", "give", "group", "toward", "young", "days", "let", "room",
	"president", "side", "social", "given", "present", "several", "order", "national", "possible", "rather", "second", "face", "per", "among", "form", "important",
	"often", "things", "looked", "early", "white", "case", "become", "large", "big", "need", "four", "within", "felt", "along", "children", "saw",
}

// Prompt appends to dst a synthetic prompt of n words for request index and
// returns the extended slice. The rule, which servers and tests can rely on:
//
//   - the prompt is n words from a fixed list of 256 common English words,
//     joined by single spaces, so a server that counts whitespace-separated
//     words (as sluice sim does) sees exactly n prompt tokens, and a BPE
//     tokenizer about n plus its chat template;
//   - the first min(n, 4) words spell index (offset by a function of seed)
//     in base 256, least significant first, so requests of one run differ
//     from their first word and up to 2³² prompts are all distinct; the
//     other words are a hash of seed, index and position;
//   - the same seed, index and n always give the same prompt.
func Prompt(dst []byte, seed uint64, index uint64, n int) []byte {
	tag := uint32(index) + uint32(mix(seed))
	for i := range n {
		if i > 0 {
			dst = append(dst, ' ')
		}
		var w byte
		if i < 4 {
			w = byte(tag >> (8 * i))
		} else {
			w = byte(mix(seed ^ mix(index^uint64(i)<<32)))
		}
		dst = append(dst, words[w]...)
	}
	return dst
}

// mix is the splitmix64 finalizer: a cheap, stateless, well-spread hash.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
