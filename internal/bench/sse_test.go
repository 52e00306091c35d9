package bench

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

type sseEvent struct{ event, data string }

// readAllEvents drains r and returns its events and the error that ended it
// (nil for a clean io.EOF).
func readAllEvents(r io.Reader) ([]sseEvent, error) {
	s := newSSEReader(r)
	var out []sseEvent
	for {
		event, data, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, sseEvent{string(event), string(data)})
	}
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []sseEvent
	}{
		{"lf", "data: a\n\ndata: b\n\n", []sseEvent{{"", "a"}, {"", "b"}}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []sseEvent{{"", "a"}, {"", "b"}}},
		{"cr", "data: a\r\rdata: b\r\r", []sseEvent{{"", "a"}, {"", "b"}}},
		{"mixed line ends", "data: a\r\n\rdata: b\n\r\n", []sseEvent{{"", "a"}, {"", "b"}}},
		{"multi-line data", "data: a\ndata: b\n\n", []sseEvent{{"", "a\nb"}}},
		{"no space after colon", "data:a\n\n", []sseEvent{{"", "a"}}},
		{"only one space dropped", "data:  a \n\n", []sseEvent{{"", " a "}}},
		{"comment", ": keep-alive\ndata: a\n\n: another\n\n", []sseEvent{{"", "a"}}},
		{"event name", "event: error\ndata: boom\n\ndata: next\n\n", []sseEvent{{"error", "boom"}, {"", "next"}}},
		{"event name without data is reset", "event: x\n\ndata: a\n\n", []sseEvent{{"", "a"}}},
		{"other fields ignored", "id: 7\nretry: 10\nfoo: bar\ndata: a\n\n", []sseEvent{{"", "a"}}},
		{"field without colon", "data\n\n", []sseEvent{{"", ""}}},
		{"blank lines between events", "\n\n\ndata: a\n\n\n\n", []sseEvent{{"", "a"}}},
		{"unterminated event discarded", "data: a\n\ndata: b\n", []sseEvent{{"", "a"}}},
		{"unterminated line discarded", "data: a\n\ndata: b", []sseEvent{{"", "a"}}},
		{"done marker", "data: {\"x\":1}\n\ndata: [DONE]\n\n", []sseEvent{{"", `{"x":1}`}, {"", "[DONE]"}}},
		{"empty", "", nil},
		{"long line", "data: " + strings.Repeat("x", 3*sseBufSize) + "\n\n", []sseEvent{{"", strings.Repeat("x", 3*sseBufSize)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			readers := map[string]io.Reader{
				"whole":    strings.NewReader(tt.input),
				"one byte": iotest.OneByteReader(strings.NewReader(tt.input)),
				"half":     iotest.HalfReader(strings.NewReader(tt.input)),
			}
			for how, r := range readers {
				got, err := readAllEvents(r)
				if err != nil {
					t.Fatalf("%s: error %v", how, err)
				}
				if !equalEvents(got, tt.want) {
					t.Errorf("%s: got %q, want %q", how, got, tt.want)
				}
			}
		})
	}
}

func TestSSEReaderLineTooLong(t *testing.T) {
	input := "data: " + strings.Repeat("x", maxSSELine) + "\n\n"
	_, err := readAllEvents(strings.NewReader(input))
	if !errors.Is(err, errLineTooLong) {
		t.Fatalf("error %v, want %v", err, errLineTooLong)
	}
}

func TestSSEReaderSourceError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(boom))
	got, err := readAllEvents(r)
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want %v", err, boom)
	}
	if !equalEvents(got, []sseEvent{{"", "a"}}) {
		t.Errorf("events before the error: %q", got)
	}
}

// TestSSEReaderDoesNotReadAhead checks that an event is returned as soon as
// its blank line is in, without waiting for more of the stream: the source
// fails the test if read past what was needed.
func TestSSEReaderDoesNotReadAhead(t *testing.T) {
	for _, input := range []string{"data: a\n\n", "data: a\r\n\r\n", "data: a\r\r"} {
		s := newSSEReader(&strictReader{t: t, data: []byte(input)})
		_, data, err := s.Next()
		if err != nil || string(data) != "a" {
			t.Errorf("%q: got %q, %v", input, data, err)
		}
	}
}

// strictReader hands out data and fails the test if read once it is empty.
type strictReader struct {
	t    *testing.T
	data []byte
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		r.t.Error("read past the end of an event")
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func equalEvents(a, b []sseEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzSSEReader feeds arbitrary bytes to the parser: it must not panic, and
// how the bytes are split into reads must not change the events.
func FuzzSSEReader(f *testing.F) {
	for _, seed := range []string{
		"data: a\n\n",
		"data: a\r\n\r\ndata: [DONE]\r\n\r\n",
		"event: error\ndata: x\rdata: y\r\r",
		": c\n\ndata\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
		"\r\n\r\r\n\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		whole, errWhole := readAllEvents(bytes.NewReader(input))
		split, errSplit := readAllEvents(iotest.OneByteReader(bytes.NewReader(input)))
		if (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("errors differ: %v vs %v", errWhole, errSplit)
		}
		if !equalEvents(whole, split) {
			t.Fatalf("events differ:\n%q\n%q", whole, split)
		}
	})
}

// FuzzReadStream feeds arbitrary bytes to the client's stream reader as a
// response body: it must not panic, and a stream it accepts must have
// consistent timings.
func FuzzReadStream(f *testing.F) {
	f.Add(chatStream(3))
	f.Add([]byte("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"error\":null,\"choices\":[{\"delta\":{\"reasoning_content\":\"x\"}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1e3}}\n\ndata: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		c := &client{promptWords: 4}
		o := &outcome{}
		o.reset()
		err := c.readStream(bytes.NewReader(body), time.Now(), o)
		if err != nil {
			return
		}
		if o.done.IsZero() {
			t.Fatal("accepted stream has no end time")
		}
		if o.ttft < 0 && len(o.itl) > 0 {
			t.Fatal("gaps without a first token")
		}
	})
}
