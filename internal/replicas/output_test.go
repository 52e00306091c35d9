package replicas

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func collect(data []byte) []string {
	var got []string
	copyLines(bytes.NewReader(data), func(s string) { got = append(got, s) })
	return got
}

func TestCopyLines(t *testing.T) {
	long := strings.Repeat("x", maxLineBytes+100)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"lines", "a\nb\n", []string{"a", "b"}},
		{"crlf and no final newline", "a\r\nb", []string{"a", "b"}},
		{"empty lines skipped", "\n\na\n\r\n", []string{"a"}},
		{"long line cut, next kept", long + "\nnext\n", []string{long[:maxLineBytes] + truncatedMark, "next"}},
		{"long line at EOF", long, []string{long[:maxLineBytes] + truncatedMark}},
		{"nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect([]byte(tt.in))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines %q, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d = %.40q…, want %.40q…", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzCopyLines feeds arbitrary replica output: every emitted line is
// bounded, non-empty and free of line breaks, and lines that fit come out
// exactly as written.
func FuzzCopyLines(f *testing.F) {
	f.Add([]byte("hello\nworld\n"))
	f.Add([]byte("a\r\n\r\n\xff\xfe\n"))
	f.Add(bytes.Repeat([]byte("y"), maxLineBytes*2+3))
	f.Fuzz(func(t *testing.T, data []byte) {
		got := collect(data)
		var want []string
		fits := true
		for _, l := range bytes.Split(data, []byte("\n")) {
			if len(l)+1 >= maxLineBytes {
				fits = false
			}
			if s := string(bytes.TrimRight(l, "\r")); s != "" {
				want = append(want, s)
			}
		}
		for _, l := range got {
			if l == "" || strings.ContainsRune(l, '\n') || len(l) > maxLineBytes+len(truncatedMark) {
				t.Fatalf("bad line %q", l)
			}
		}
		if !fits {
			if len(got) > len(want) {
				t.Fatalf("%d lines out of %d in", len(got), len(want))
			}
			return
		}
		if len(got) != len(want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("line %d = %q, want %q", i, got[i], want[i])
			}
		}
	})
}

func TestTail(t *testing.T) {
	var tl tail
	for _, s := range []string{"one", "two", "listen: Address already in use", "four"} {
		tl.add(s)
	}
	if got := tl.String(); got != "two | listen: Address already in use | four" {
		t.Errorf("tail = %q", got)
	}
	if !tl.contains("address already in use") {
		t.Error("contains is case-sensitive")
	}
}

func TestOutputPumpDropsInsteadOfBlocking(t *testing.T) {
	block := make(chan struct{})
	p := newOutputPump(slog.New(slog.NewTextHandler(blockingWriter{block}, nil)))
	// The writer blocks the pump on its first line; the backlog fills and
	// the rest are dropped, and send never blocks.
	for range outputBacklog + 100 {
		p.send(outputLine{replica: "r-1", stream: "stdout", text: "x"})
	}
	if p.dropped.Load() == 0 {
		t.Error("nothing dropped with a blocked log writer")
	}
	close(block)
	p.stop()
}

type blockingWriter struct{ c chan struct{} }

func (w blockingWriter) Write(b []byte) (int, error) {
	<-w.c
	return len(b), nil
}

func BenchmarkCopyLines(b *testing.B) {
	line := strings.Repeat("the quick brown fox ", 6) + "\n"
	data := []byte(strings.Repeat(line, 1000))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		copyLines(bytes.NewReader(data), func(string) { n++ })
	}
}
