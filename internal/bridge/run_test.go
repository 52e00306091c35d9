package bridge

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// FuzzRun feeds arbitrary message bodies and paths (untrusted input from
// the queue) through run: it never panics, sends only JSON to the
// gateway, and a refusal always has a status and an error.
func FuzzRun(f *testing.F) {
	for _, s := range [][2]string{{`{"model":"m"}`, ""}, {"not json", "/v1/embeddings"}, {`{}`, "/v1/jobs"}, {`[]`, "relative"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	o := Options{
		Exec: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
		}),
		RetryBackoff: time.Millisecond,
	}
	if err := o.defaults(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body, path string) {
		res := run(context.Background(), &o, []byte(body), path)
		if res.err != "" && res.status == 0 {
			t.Fatalf("refusal without a status: %+v", res)
		}
		if res.err == "" && string(res.body) != body {
			t.Fatalf("answer %q, want the echo of %q", res.body, body)
		}
	})
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: time.Minute} {
		for range 20 {
			if d := backoff(time.Second, n); d < want/2 || d > want {
				t.Fatalf("backoff(1s, %d) = %s, want in [%s, %s]", n, d, want/2, want)
			}
		}
	}
}
