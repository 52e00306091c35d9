package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/metrics"
)

// TestCollect reads the gateway's own metric families from a registry.
func TestCollect(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewGateway(reg)
	m.Requests.WithLabelValues("chat", "200").Add(7)
	m.Requests.WithLabelValues("chat", "503").Add(1)
	m.Requests.WithLabelValues("", "404").Add(2) // no pool: not a pool's traffic
	for _, v := range []float64{0.02, 0.2, 2} {
		m.Duration.WithLabelValues("chat").Observe(v)
	}
	m.Tokens.WithLabelValues("chat", "acme", "prompt").Add(10)
	m.Tokens.WithLabelValues("chat", "acme", "completion").Add(30)
	m.QueueRejections.WithLabelValues("chat", "queue_full").Add(3)
	m.Upstream.WithLabelValues("chat", "http://a", "200").Add(5)
	m.Upstream.WithLabelValues("chat", "http://a", "connect").Add(2)
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_ratelimited_total"}, []string{"tenant", "limit"})
	reg.MustRegister(limited)
	limited.WithLabelValues("acme", "rpm").Add(4)

	srv := httptest.NewServer(StatsHandler(reg, func() []TenantLimits { return []TenantLimits{{Name: "acme", TPM: 1000}} }))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	chat := s.Pools["chat"]
	switch {
	case chat == nil:
		t.Fatalf("no chat pool in %+v", s.Pools)
	case chat.Requests["200"] != 7 || chat.Requests["503"] != 1:
		t.Errorf("requests %v", chat.Requests)
	case chat.Duration == nil || chat.Duration.Count != 3 || len(chat.Duration.Bounds) != len(metrics.LatencyBuckets):
		t.Errorf("duration %+v", chat.Duration)
	case chat.Tokens["completion"] != 30 || chat.Rejections != 3:
		t.Errorf("tokens %v rejections %v", chat.Tokens, chat.Rejections)
	case s.Backends["chat"]["http://a"]["connect"] != 2:
		t.Errorf("backends %v", s.Backends)
	}
	if _, ok := s.Pools[""]; ok {
		t.Error("requests without a pool counted as a pool")
	}
	acme := s.Tenants["acme"]
	if acme == nil || acme.Tokens["prompt"] != 10 || acme.Limited["rpm"] != 4 || acme.Limits == nil || acme.Limits.TPM != 1000 {
		t.Errorf("tenant %+v", acme)
	}
}

func TestTenantsFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *config.Config
		want int
	}{
		{"nil", nil, 0},
		{"open gateway", &config.Config{}, 0},
		{"keys", &config.Config{Auth: &config.Auth{Keys: []config.APIKey{
			{Name: "a", Key: "secret", Limits: config.TenantLimits{RPM: 5}},
			{Name: "b", KeySHA256: "ab"},
		}}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := TenantsFromConfig(tc.cfg)
			if len(got) != tc.want {
				t.Fatalf("got %+v", got)
			}
			if tc.want > 0 && (got[0] != TenantLimits{Name: "a", RPM: 5}) {
				t.Errorf("first tenant %+v", got[0])
			}
			b, _ := json.Marshal(got)
			if json.Valid(b) && string(b) != "null" && strings.Contains(string(b), "secret") {
				t.Errorf("a key leaked into %s", b)
			}
		})
	}
}
