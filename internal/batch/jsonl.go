package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Endpoints are the endpoints a batch may run, as OpenAI's Batch API names
// them.
var Endpoints = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/moderations"}

// Limits of an input file.
const (
	// MaxLines is the most requests in one input file (OpenAI's limit).
	MaxLines = 50_000
	// maxCustomID bounds a custom_id.
	maxCustomID = 512
)

// errEmptyFile: an input file without a request.
var errEmptyFile = errors.New("the file holds no requests")

// request is one line of an input file.
type request struct {
	// line is the line's number in the file, from 1.
	line int
	// index is the request's position among the file's requests, from 0.
	index    int
	customID string
	url      string
	body     []byte
	model    string
}

// LineError is a problem with one line of an input file.
type LineError struct {
	Line    int
	Message string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Message) }

// wireLine is a line as written: {"custom_id","method","url","body"}.
type wireLine struct {
	CustomID *string         `json:"custom_id"`
	Method   *string         `json:"method"`
	URL      *string         `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// lineReader reads the requests of a JSONL input file in order. Blank
// lines are skipped.
type lineReader struct {
	sc       *bufio.Scanner
	maxLine  int
	n, index int
}

func newLineReader(r io.Reader, maxLine int) *lineReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine+1)
	return &lineReader{sc: sc, maxLine: maxLine}
}

// next returns the next request, io.EOF after the last, a *LineError for a
// line that is not a valid request or longer than maxLine bytes, or the
// error of reading.
func (l *lineReader) next() (request, error) {
	for l.sc.Scan() {
		l.n++
		raw := bytes.TrimSpace(l.sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		req, err := parseLine(raw)
		if err != nil {
			return request{}, &LineError{Line: l.n, Message: err.Error()}
		}
		req.line, req.index = l.n, l.index
		l.index++
		return req, nil
	}
	if err := l.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return request{}, &LineError{Line: l.n + 1, Message: fmt.Sprintf("longer than %d bytes", l.maxLine)}
		}
		return request{}, err
	}
	return request{}, io.EOF
}

// scanRequests calls fn with every request of r's JSONL, in order, and
// returns the first error of reading (see lineReader.next) or of fn.
func scanRequests(r io.Reader, maxLine int, fn func(request) error) error {
	lines := newLineReader(r, maxLine)
	for {
		req, err := lines.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(req); err != nil {
			return err
		}
	}
}

// parseLine checks one line: a JSON object with a custom_id, method POST,
// a supported url and a body object naming a model.
func parseLine(raw []byte) (request, error) {
	var w wireLine
	if err := json.Unmarshal(raw, &w); err != nil {
		return request{}, fmt.Errorf("not a JSON object: %v", err)
	}
	switch {
	case w.CustomID == nil || *w.CustomID == "":
		return request{}, errors.New("custom_id is missing")
	case len(*w.CustomID) > maxCustomID:
		return request{}, fmt.Errorf("custom_id is longer than %d bytes", maxCustomID)
	case w.Method == nil:
		return request{}, errors.New("method is missing; want POST")
	case *w.Method != "POST":
		return request{}, fmt.Errorf("method %q: want POST", *w.Method)
	case w.URL == nil:
		return request{}, errors.New("url is missing")
	case !slices.Contains(Endpoints, *w.URL):
		return request{}, fmt.Errorf("url %q is not supported; want one of %s", *w.URL, strings.Join(Endpoints, ", "))
	}
	body := bytes.TrimSpace(w.Body)
	if len(body) == 0 || body[0] != '{' {
		return request{}, errors.New("body must be a JSON object")
	}
	var m struct {
		Model any `json:"model"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return request{}, fmt.Errorf("body: %v", err)
	}
	model, ok := m.Model.(string)
	if !ok || model == "" {
		return request{}, errors.New("body.model is missing; each request names its model")
	}
	return request{customID: *w.CustomID, url: *w.URL, body: body, model: model}, nil
}

// checkFile validates a whole input file: every line a request, custom_ids
// unique, at least one request and at most MaxLines. It returns the
// number of requests and the endpoints they use.
func checkFile(r io.Reader, maxLine int) (int, []string, error) {
	seen := make(map[string]int)
	var urls []string
	count := 0
	err := scanRequests(r, maxLine, func(req request) error {
		if first, dup := seen[req.customID]; dup {
			return &LineError{Line: req.line, Message: fmt.Sprintf("custom_id %q repeats line %d; each request needs its own", req.customID, first)}
		}
		if req.index >= MaxLines {
			return &LineError{Line: req.line, Message: fmt.Sprintf("a batch holds at most %d requests", MaxLines)}
		}
		seen[req.customID] = req.line
		if !slices.Contains(urls, req.url) {
			urls = append(urls, req.url)
		}
		count++
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	if count == 0 {
		return 0, nil, errEmptyFile
	}
	return count, urls, nil
}
