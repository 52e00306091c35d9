package replicas

import (
	"log/slog"
	"testing"
)

// A replica logging in slog's text format is logged with its own level,
// message and fields, not quoted inside the gateway's line.
func TestParseLogfmt(t *testing.T) {
	level, msg, attrs, ok := parseLogfmt(`time=2026-12-03T09:03:08.131Z level=WARN msg="sim stopped" addr=127.0.0.1:33215 note="a b"`)
	if !ok || level != slog.LevelWarn || msg != "sim stopped" || len(attrs) != 2 || attrs[0].Value.String() != "127.0.0.1:33215" || attrs[1].Value.String() != "a b" {
		t.Fatalf("parsed %v %q %v %v", level, msg, attrs, ok)
	}
	for _, line := range []string{"plain output", `time=x msg="no level"`, `time=x level=INFO msg="unterminated`, `{"json":1}`} {
		if _, _, _, ok := parseLogfmt(line); ok {
			t.Errorf("%q parsed as a slog line", line)
		}
	}
}

// FuzzParseLogfmt: any replica output is handled without panicking.
func FuzzParseLogfmt(f *testing.F) {
	f.Add(`time=t level=INFO msg=hi a=b`)
	f.Add(`time= level= msg="\x"`)
	f.Fuzz(func(t *testing.T, line string) { parseLogfmt(line) })
}
