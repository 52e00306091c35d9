package replicas

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// maxLineBytes bounds one logged line of replica output; the rest of a
// longer line is dropped and the line is marked truncated. It keeps a replica
// that prints a megabyte without a newline from growing sluice's memory.
const maxLineBytes = 4 << 10

// outputBacklog is how many lines may wait for the log writer. When it is
// full (the log sink is slower than the replicas), further lines are
// dropped and counted rather than stalling the readers: a replica blocked
// on a full stdout pipe would stop serving.
const outputBacklog = 1024

// tailLines is how much recent output a replica keeps for its exit report.
const tailLines = 3

// outputLine is one line a replica wrote.
type outputLine struct {
	replica string
	stream  string // stdout or stderr
	text    string
}

// outputPump writes replica output to the logger from one goroutine.
type outputPump struct {
	log     *slog.Logger
	lines   chan outputLine
	dropped atomic.Int64
	done    chan struct{}
}

func newOutputPump(log *slog.Logger) *outputPump {
	p := &outputPump{log: log, lines: make(chan outputLine, outputBacklog), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *outputPump) loop() {
	defer close(p.done)
	for l := range p.lines {
		if n := p.dropped.Swap(0); n > 0 {
			p.log.Warn("replica output dropped: the log writer is too slow", "lines", n)
		}
		if level, msg, attrs, ok := parseLogfmt(l.text); ok {
			// A replica that logs like sluice (sluice sim does): its own
			// level, message and fields, not its line quoted inside ours.
			attrs = append(attrs, slog.String("replica", l.replica), slog.String("stream", l.stream))
			p.log.LogAttrs(context.Background(), level, msg, attrs...)
			continue
		}
		p.log.Info(l.text, "replica", l.replica, "stream", l.stream)
	}
}

// parseLogfmt reads a line that log/slog's text handler wrote
// ("time=… level=INFO msg=… key=value …"): its level, message and other
// fields (time dropped: the gateway stamps its own). ok is false for any
// other line.
func parseLogfmt(line string) (level slog.Level, msg string, attrs []slog.Attr, ok bool) {
	if !strings.HasPrefix(line, "time=") {
		return 0, "", nil, false
	}
	rest := line
	var sawLevel, sawMsg bool
	for rest != "" {
		rest = strings.TrimLeft(rest, " ")
		key, after, found := strings.Cut(rest, "=")
		if !found || key == "" || strings.ContainsAny(key, " \"") {
			return 0, "", nil, false
		}
		var val string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return 0, "", nil, false
			}
			val, _ = strconv.Unquote(q)
			rest = after[len(q):]
		} else {
			val, rest, _ = strings.Cut(after, " ")
		}
		switch key {
		case "time":
		case "level":
			if level.UnmarshalText([]byte(val)) != nil {
				return 0, "", nil, false
			}
			sawLevel = true
		case "msg":
			msg, sawMsg = val, true
		default:
			attrs = append(attrs, slog.String(key, val))
		}
	}
	return level, msg, attrs, sawLevel && sawMsg
}

// send queues l, or drops it when the backlog is full.
func (p *outputPump) send(l outputLine) {
	select {
	case p.lines <- l:
	default:
		p.dropped.Add(1)
	}
}

// stop writes what is queued and returns. No send may follow.
func (p *outputPump) stop() {
	close(p.lines)
	<-p.done
}

// tail keeps the last few lines a replica wrote.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		t.lines = append(t.lines[:0], t.lines[1:]...)
	}
	t.lines = append(t.lines, s)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, " | ")
}

// contains reports whether a kept line holds sub, ignoring case.
func (t *tail) contains(sub string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		if strings.Contains(strings.ToLower(l), sub) {
			return true
		}
	}
	return false
}

// truncatedMark ends a line that was cut at maxLineBytes.
const truncatedMark = " …[truncated]"

// copyLines reads r line by line until EOF or an error (the read end was
// closed) and calls emit with each non-empty line, without its line ending
// and cut to maxLineBytes.
func copyLines(r io.Reader, emit func(text string)) {
	br := bufio.NewReaderSize(r, maxLineBytes)
	for {
		line, err := br.ReadSlice('\n')
		truncated := errors.Is(err, bufio.ErrBufferFull)
		if text := string(bytes.TrimRight(line, "\r\n")); text != "" {
			if truncated {
				text += truncatedMark
			}
			emit(text)
		}
		// Skip the rest of an over-long line.
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return
		}
	}
}
