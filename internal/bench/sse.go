package bench

import (
	"bytes"
	"errors"
	"io"
)

// errLineTooLong is returned by sseReader for a line over maxSSELine.
var errLineTooLong = errors.New("sse: line too long")

const (
	sseBufSize = 4 << 10
	// maxSSELine bounds one line of an event stream; OpenAI chunks are a few
	// hundred bytes.
	maxSSELine = 1 << 20
)

// sseReader reads a text/event-stream incrementally: Next returns each event
// as soon as its terminating blank line has arrived, reading no further. It
// follows the WHATWG parsing rules for the fields bench needs (data, event;
// comments and other fields are skipped): lines end in LF, CRLF or a lone CR,
// one space after the colon is dropped, multi-line data is joined with LF,
// and an event cut off by the end of the stream is discarded.
type sseReader struct {
	src        io.Reader
	buf        []byte
	start, end int
	// skipLF is set when the last line ended in CR at the end of the buffer:
	// an LF arriving next belongs to that line break.
	skipLF bool
	eof    bool
	data   []byte
	event  []byte
}

func newSSEReader(src io.Reader) *sseReader {
	return &sseReader{src: src, buf: make([]byte, sseBufSize)}
}

// reset points s at a new stream, keeping its buffers.
func (s *sseReader) reset(src io.Reader) {
	*s = sseReader{src: src, buf: s.buf, data: s.data[:0], event: s.event[:0]}
}

// Next returns the event type ("" when none was given) and data of the next
// event that has data. Both are valid until the next call. At the end of the
// stream it returns io.EOF; other errors come from the source or are
// errLineTooLong.
func (s *sseReader) Next() (event, data []byte, err error) {
	s.data = s.data[:0]
	s.event = s.event[:0]
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			return nil, nil, err
		}
		if len(line) == 0 {
			if hasData {
				return s.event, bytes.TrimSuffix(s.data, []byte{'\n'}), nil
			}
			s.event = s.event[:0]
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			s.data = append(s.data, value...)
			s.data = append(s.data, '\n')
			hasData = true
		case "event":
			s.event = append(s.event[:0], value...)
		}
	}
}

// readLine returns the next line without its terminator. The line aliases
// s.buf and is valid until the next call.
func (s *sseReader) readLine() ([]byte, error) {
	scanned := 0
	for {
		if s.skipLF && s.start < s.end {
			if s.buf[s.start] == '\n' {
				s.start++
			}
			s.skipLF = false
		}
		pending := s.buf[s.start:s.end]
		if i := indexLineBreak(pending[min(scanned, len(pending)):]); i >= 0 {
			i += min(scanned, len(pending))
			line := pending[:i]
			s.start += i + 1
			if pending[i] == '\r' {
				switch {
				case i+1 < len(pending) && pending[i+1] == '\n':
					s.start++
				case i+1 == len(pending):
					s.skipLF = true
				}
			}
			return line, nil
		}
		scanned = len(pending)
		if s.eof {
			return nil, io.EOF
		}
		if err := s.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more of the stream into s.buf, making room first.
func (s *sseReader) fill() error {
	if s.start > 0 {
		s.end = copy(s.buf, s.buf[s.start:s.end])
		s.start = 0
	}
	if s.end == len(s.buf) {
		if len(s.buf) >= maxSSELine {
			return errLineTooLong
		}
		grown := make([]byte, min(2*len(s.buf), maxSSELine))
		copy(grown, s.buf[:s.end])
		s.buf = grown
	}
	for range 100 {
		n, err := s.src.Read(s.buf[s.end:])
		s.end += n
		if err == io.EOF {
			s.eof = true
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
	return io.ErrNoProgress
}

// indexLineBreak returns the index of the first CR or LF in b, or -1.
func indexLineBreak(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	prefix := b
	if lf >= 0 {
		prefix = b[:lf]
	}
	if cr := bytes.IndexByte(prefix, '\r'); cr >= 0 {
		return cr
	}
	return lf
}
