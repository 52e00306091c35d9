package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// BenchmarkIdlePool sends requests through a pool's transport with C of
// them in flight at once, for several idle-connection caps per backend, and
// reports the share of requests that had to dial (dials/req): a cap below
// the concurrency closes connections on return and dials them again.
func BenchmarkIdlePool(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer backend.Close()
	for _, c := range []int{16, 64, 256} {
		for _, idle := range []int{2, 64, 256, 1024} {
			b.Run("concurrency="+strconv.Itoa(c)+"/idle="+strconv.Itoa(idle), func(b *testing.B) {
				tr, dials := countingTransport(idle)
				defer tr.CloseIdleConnections()
				var wg sync.WaitGroup
				var n atomic.Int64
				total := int64(b.N)
				b.ResetTimer()
				for range c {
					wg.Go(func() {
						for n.Add(1) <= total {
							req, _ := http.NewRequest(http.MethodPost, backend.URL+"/v1/x", strings.NewReader(`{"model":"m"}`))
							resp, err := tr.RoundTrip(req)
							if err != nil {
								continue
							}
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
					})
				}
				wg.Wait()
				b.ReportMetric(float64(dials.Load())/float64(b.N), "dials/req")
			})
		}
	}
}

// BenchmarkIdleConnMemory opens b.N idle keep-alive connections through a
// pool's transport and reports the heap and stack bytes each one holds, for
// the pool's 32 KiB buffers and for Go's default 4 KiB. The figure includes
// the test server's end of each connection.
func BenchmarkIdleConnMemory(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	for _, buf := range []int{4 << 10, 32 << 10} {
		b.Run("buffers="+strconv.Itoa(buf), func(b *testing.B) {
			tr, _ := countingTransport(1 << 20)
			tr.ReadBufferSize, tr.WriteBufferSize = buf, buf
			defer tr.CloseIdleConnections()
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			gate := make(chan struct{})
			var wg sync.WaitGroup
			for range b.N {
				wg.Go(func() {
					<-gate
					req, _ := http.NewRequest(http.MethodGet, backend.URL+"/", nil)
					resp, err := tr.RoundTrip(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			close(gate)
			wg.Wait()
			time.Sleep(100 * time.Millisecond) // the connections settle in the idle pool
			runtime.GC()
			runtime.ReadMemStats(&m1)
			grown := int64(m1.HeapInuse+m1.StackInuse) - int64(m0.HeapInuse+m0.StackInuse)
			b.ReportMetric(float64(grown)/float64(b.N)/1024, "KiB/conn")
		})
	}
}

// countingTransport is a pool's transport with idle connections per host
// capped at idle, counting its dials.
func countingTransport(idle int) (*http.Transport, *atomic.Int64) {
	tr := newTransport(config.Timeouts{Connect: config.Duration(time.Second), FirstByte: config.Duration(10 * time.Second)}, false)
	tr.MaxIdleConnsPerHost = idle
	var dials atomic.Int64
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	return tr, &dials
}
