package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// The request bodies the sim reads. Fields it does not simulate
// (temperature, tools, logprobs, ...) are accepted and ignored.

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	N                   *int           `json:"n"`
	Seed                *int64         `json:"seed"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
}

type chatMessage struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

// messageContent is a chat message's content: a string, null, or a list of
// parts of which the sim reads the text ones.
type messageContent struct {
	text  string
	parts []contentPart
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return errors.New("empty content")
	case b[0] == 'n':
		*c = messageContent{}
		return nil
	case b[0] == '"':
		c.text = unquote(b)
		return nil
	case b[0] == '[':
		return json.Unmarshal(b, &c.parts)
	}
	return errors.New("content must be a string or an array of content parts")
}

// unquote decodes a JSON string the decoder has already validated, without
// a second decoder pass when it holds no escapes.
func unquote(b []byte) string {
	inner := b[1 : len(b)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var s string
	_ = json.Unmarshal(b, &s) // valid JSON: cannot fail
	return s
}

type completionRequest struct {
	Model         string         `json:"model"`
	Prompt        promptInput    `json:"prompt"`
	MaxTokens     *int           `json:"max_tokens"`
	N             *int           `json:"n"`
	Seed          *int64         `json:"seed"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type embeddingRequest struct {
	Model          string      `json:"model"`
	Input          promptInput `json:"input"`
	EncodingFormat string      `json:"encoding_format"`
	Dimensions     *int        `json:"dimensions"`
}

// promptInput is the polymorphic "prompt" of completions and "input" of
// embeddings: a string, an array of strings, an array of token ids, or an
// array of arrays of token ids.
type promptInput struct {
	items []promptItem
	set   bool
}

// promptItem is one prompt: text, or token ids when isIDs.
type promptItem struct {
	text  string
	ids   []int64
	isIDs bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return errors.New("empty value")
	}
	p.items = p.items[:0]
	switch b[0] {
	case 'n':
		p.set = false
		return nil
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p.items = append(p.items, promptItem{text: s})
		p.set = true
		return nil
	case '[':
	default:
		return errors.New("want a string, an array of strings, or an array of token ids")
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	p.set = true
	if len(raw) == 0 {
		return nil
	}
	switch first := bytes.TrimSpace(raw[0]); {
	case len(first) > 0 && first[0] == '"':
		for _, r := range raw {
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return errors.New("an array of strings must hold only strings")
			}
			p.items = append(p.items, promptItem{text: s})
		}
	case len(first) > 0 && first[0] == '[':
		for _, r := range raw {
			var ids []int64
			if err := json.Unmarshal(r, &ids); err != nil {
				return errors.New("an array of token id arrays must hold only arrays of integers")
			}
			p.items = append(p.items, promptItem{ids: ids, isIDs: true})
		}
	default:
		var ids []int64
		if err := json.Unmarshal(b, &ids); err != nil {
			return errors.New("an array of token ids must hold only integers")
		}
		p.items = append(p.items, promptItem{ids: ids, isIDs: true})
	}
	return nil
}

// tokens is the item's prompt-token count (see the package comment).
func (it *promptItem) tokens() int {
	if it.isIDs {
		return len(it.ids)
	}
	return countWords(it.text)
}

// tokenize feeds the item's tokens to t.
func (it *promptItem) tokenize(t *tokenizer) {
	if !it.isIDs {
		t.text(it.text)
		return
	}
	for _, id := range it.ids {
		t.token(uint64(id))
	}
}

func (it *promptItem) hash(h *hasher) {
	if it.isIDs {
		h.byte('i')
		for _, id := range it.ids {
			h.uint64(uint64(id))
		}
	} else {
		h.byte('s')
		h.string(it.text)
	}
	h.sep()
}

// outputTokens resolves the token budget of a request: the first of the
// given limits that is set, else def.
func outputTokens(def int, limits ...*int) (int, error) {
	for _, l := range limits {
		if l == nil {
			continue
		}
		if *l < 1 || *l > MaxOutputTokens {
			return 0, fmt.Errorf("max_tokens must be between 1 and %d, got %d", MaxOutputTokens, *l)
		}
		return *l, nil
	}
	return def, nil
}

// checkN rejects more than one choice, which the sim does not generate.
func checkN(n *int) error {
	if n != nil && *n != 1 {
		return errors.New("n must be 1: the simulator generates one choice per request, got n=" + strconv.Itoa(*n))
	}
	return nil
}
