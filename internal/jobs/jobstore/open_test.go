package jobstore

import (
	"context"
	"testing"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
		bad  bool
	}{
		{in: "", want: Spec{Kind: Embedded}},
		{in: "embedded", want: Spec{Kind: Embedded}},
		{in: "redis", want: Spec{Kind: Redis}},
		{in: "nats://127.0.0.1:4222", want: Spec{Kind: NATS, URL: "nats://127.0.0.1:4222", Replicas: 1}},
		{in: "nats://a:4222, nats://b:4222?replicas=3", want: Spec{Kind: NATS, URL: "nats://a:4222,nats://b:4222", Replicas: 3}},
		{in: "tls://user:pw@nats.example.com:4222", want: Spec{Kind: NATS, URL: "tls://user:pw@nats.example.com:4222", Replicas: 1}},
		{in: "nats://a:4222?replicas=9", bad: true},
		{in: "nats://a:4222?stream=x", bad: true},
		{in: "nats://", bad: true},
		{in: "postgres://db", bad: true},
		{in: "Embedded", bad: true},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "redis", "nats://a:1?replicas=3", "tls://x", "nats://a,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := Parse(s)
		if err == nil && spec.Kind == NATS && (spec.URL == "" || spec.Replicas < 1) {
			t.Fatalf("Parse(%q) = %+v", s, spec)
		}
	})
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	cfg := &config.Config{DataDir: t.TempDir()}
	s, err := Open(ctx, cfg, jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Jobs.Store = "redis"
	if _, err := Open(ctx, cfg, jobstest.TestLogger()); err == nil {
		t.Fatal("redis store without redis.url opened")
	}
}
