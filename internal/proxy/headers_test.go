package proxy

import (
	"net/http"
	"testing"
	"time"
)

func TestCopyHeaderDropsHopByHop(t *testing.T) {
	src := http.Header{
		"Connection":        {"keep-alive, X-Private"},
		"X-Private":         {"secret"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"Te":                {"trailers"},
		"Content-Type":      {"application/json"},
		"Authorization":     {"Bearer k"},
	}
	dst := http.Header{}
	copyHeader(dst, src)
	for _, k := range []string{"Connection", "X-Private", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Te"} {
		if _, ok := dst[k]; ok {
			t.Errorf("%s forwarded", k)
		}
	}
	for _, k := range []string{"Content-Type", "Authorization"} {
		if dst.Get(k) != src.Get(k) {
			t.Errorf("%s not forwarded", k)
		}
	}
}

func TestWantsTrailers(t *testing.T) {
	for v, want := range map[string]bool{"trailers": true, "gzip, Trailers": true, "gzip": false, "": false} {
		if got := wantsTrailers(http.Header{"Te": {v}}); got != want {
			t.Errorf("TE %q: %v", v, got)
		}
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	for n := 1; n <= 4; n++ {
		base := 10 << (n - 1)
		for range 100 {
			d := backoff(10*1e6, n)
			if d < durationMS(base)/2 || d >= durationMS(base)*3/2 {
				t.Fatalf("retry %d: backoff %v outside [%v, %v)", n, d, durationMS(base)/2, durationMS(base)*3/2)
			}
		}
	}
}

func durationMS(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
