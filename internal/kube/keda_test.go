package kube

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sluice-ai/sluice/internal/kube/externalscaler"
)

// demands is a mutable set of pools and their demand.
type demands struct {
	mu sync.Mutex
	m  map[string]float64
}

func (d *demands) set(pool string, v float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[pool] = v
}

func (d *demands) remove(pool string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.m, pool)
}

func (d *demands) get(pool string) (float64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.m[pool]
	return v, ok
}

// kedaServer serves an ExternalScaler on loopback and returns a client of
// it and a function that stops the server and returns Serve's error.
func kedaServer(t *testing.T, opts ExternalScalerOptions) (externalscaler.ExternalScalerClient, func() error) {
	t.Helper()
	s, err := NewExternalScaler(opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			serveErr = <-served
			conn.Close()
		})
		return serveErr
	}
	t.Cleanup(func() { _ = stop() })
	return externalscaler.NewExternalScalerClient(conn), stop
}

func ref(md map[string]string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: "model", Namespace: "inference", ScalerMetadata: md}
}

func TestExternalScaler(t *testing.T) {
	d := &demands{m: map[string]float64{"chat": 6, "idle": 0, "fractional": 6.25}}
	client, _ := kedaServer(t, ExternalScalerOptions{
		Demand: d.get,
		TargetConcurrency: func(pool string) float64 {
			if pool == "chat" {
				return 3 // its autoscale.target_concurrency
			}
			return 0 // no autoscale block: the default
		},
	})
	ctx := context.Background()

	specs := []struct {
		md          map[string]string
		target      float64
		integerSize int64
	}{
		{map[string]string{"pool": "chat"}, 3, 3},
		{map[string]string{"pool": "idle"}, 4, 4},
		{map[string]string{"pool": "chat", "targetConcurrency": "2.5"}, 2.5, 2},
		{map[string]string{"pool": "chat", "targetConcurrency": "0.5"}, 0.5, 1},
	}
	for _, tt := range specs {
		resp, err := client.GetMetricSpec(ctx, ref(tt.md))
		if err != nil {
			t.Fatalf("GetMetricSpec(%v): %v", tt.md, err)
		}
		want := &externalscaler.MetricSpec{MetricName: MetricName(tt.md["pool"]), TargetSize: tt.integerSize, TargetSizeFloat: tt.target}
		if got := resp.GetMetricSpecs(); len(got) != 1 || got[0].GetMetricName() != want.MetricName ||
			got[0].GetTargetSize() != want.TargetSize || got[0].GetTargetSizeFloat() != want.TargetSizeFloat {
			t.Errorf("GetMetricSpec(%v) = %v, want [%v]", tt.md, got, want)
		}
	}

	values := []struct {
		pool    string
		integer int64
		float   float64
	}{
		{"chat", 6, 6},
		{"idle", 0, 0},
		{"fractional", 7, 6.25},
	}
	for _, tt := range values {
		resp, err := client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"pool": tt.pool}), MetricName: "s0-" + MetricName(tt.pool)})
		if err != nil {
			t.Fatalf("GetMetrics(%s): %v", tt.pool, err)
		}
		got := resp.GetMetricValues()
		if len(got) != 1 || got[0].GetMetricName() != "s0-"+MetricName(tt.pool) || got[0].GetMetricValue() != tt.integer || got[0].GetMetricValueFloat() != tt.float {
			t.Errorf("GetMetrics(%s) = %v, want the name asked for, %d and %v", tt.pool, got, tt.integer, tt.float)
		}
	}

	active := []struct {
		md   map[string]string
		want bool
	}{
		{map[string]string{"pool": "chat"}, true},
		{map[string]string{"pool": "idle"}, false},
		{map[string]string{"pool": "chat", "activationDemand": "6"}, false},
		{map[string]string{"pool": "chat", "activationDemand": "5.5"}, true},
	}
	for _, tt := range active {
		resp, err := client.IsActive(ctx, ref(tt.md))
		if err != nil {
			t.Fatalf("IsActive(%v): %v", tt.md, err)
		}
		if resp.GetResult() != tt.want {
			t.Errorf("IsActive(%v) = %v, want %v", tt.md, resp.GetResult(), tt.want)
		}
	}

	bad := []struct {
		md   map[string]string
		code codes.Code
	}{
		{nil, codes.InvalidArgument},
		{map[string]string{"pool": ""}, codes.InvalidArgument},
		{map[string]string{"pool": "nope"}, codes.NotFound},
		{map[string]string{"pool": "chat", "targetConcurrency": "0"}, codes.InvalidArgument},
		{map[string]string{"pool": "chat", "targetConcurrency": "-2"}, codes.InvalidArgument},
		{map[string]string{"pool": "chat", "targetConcurrency": "four"}, codes.InvalidArgument},
		{map[string]string{"pool": "chat", "targetConcurrency": "NaN"}, codes.InvalidArgument},
		{map[string]string{"pool": "chat", "targetConcurrency": "+Inf"}, codes.InvalidArgument},
		{map[string]string{"pool": "chat", "activationDemand": "-1"}, codes.InvalidArgument},
		{map[string]string{"pool": "chat", "activationDemand": "NaN"}, codes.InvalidArgument},
	}
	for _, tt := range bad {
		calls := map[string]error{}
		_, calls["IsActive"] = client.IsActive(ctx, ref(tt.md))
		_, calls["GetMetricSpec"] = client.GetMetricSpec(ctx, ref(tt.md))
		_, calls["GetMetrics"] = client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(tt.md)})
		stream, err := client.StreamIsActive(ctx, ref(tt.md))
		if err == nil {
			_, err = stream.Recv()
		}
		calls["StreamIsActive"] = err
		for call, err := range calls {
			if status.Code(err) != tt.code {
				t.Errorf("%s(%v) = %v, want code %v", call, tt.md, err, tt.code)
			}
		}
	}
}

// StreamIsActive sends the state at once, then only changes, and ends when
// the server stops.
func TestExternalScalerStream(t *testing.T) {
	d := &demands{m: map[string]float64{"chat": 0, "gone": 1}}
	clk := clockwork.NewFakeClock()
	client, stop := kedaServer(t, ExternalScalerOptions{Demand: d.get, Clock: clk, StreamInterval: time.Second})
	ctx := context.Background()

	stream, err := client.StreamIsActive(ctx, ref(map[string]string{"pool": "chat"}))
	if err != nil {
		t.Fatal(err)
	}
	recv := func(want bool) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if resp.GetResult() != want {
			t.Fatalf("Recv = %v, want %v", resp.GetResult(), want)
		}
	}
	recv(false) // the state when the stream opens
	d.set("chat", 2)
	clk.Advance(time.Second)
	recv(true) // a request arrived: activate
	clk.Advance(time.Second)
	d.set("chat", 3) // still active: nothing to send
	clk.Advance(time.Second)
	d.set("chat", 0)
	clk.Advance(time.Second)
	recv(false) // the next message is the change, not a repeat

	// A pool removed from the config ends its streams.
	gone, err := client.StreamIsActive(ctx, ref(map[string]string{"pool": "gone"}))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := gone.Recv(); err != nil || !resp.GetResult() {
		t.Fatalf("gone: Recv = %v, %v; want true", resp, err)
	}
	d.remove("gone")
	for i := 0; ; i++ {
		clk.Advance(time.Second)
		_, err := gone.Recv()
		if status.Code(err) == codes.NotFound {
			break
		}
		if i == 10 || err != nil {
			t.Fatalf("gone: Recv after removal = %v, want NotFound", err)
		}
	}

	// Stopping the server ends the open stream cleanly.
	if err := stop(); err != nil {
		t.Fatalf("Serve = %v, want nil after its context ended", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after stop = %v, want io.EOF", err)
	}
}

func TestNewExternalScalerNeedsDemand(t *testing.T) {
	if _, err := NewExternalScaler(ExternalScalerOptions{}); err == nil {
		t.Error("NewExternalScaler without Demand = nil error")
	}
}

// FuzzTrigger feeds arbitrary trigger metadata to the parser KEDA's
// requests go through: it accepts only a known pool, a finite target above
// 0 and a finite activation of 0 or more, and never panics.
func FuzzTrigger(f *testing.F) {
	f.Add("chat", "4", "0", true, true)
	f.Add("chat", "1e400", "-0", true, true)
	f.Add("nope", "NaN", "Inf", true, true)
	f.Add("", "", "", false, false)
	f.Add("chat", "0x1p-3", "1_0", true, true)
	s, err := NewExternalScaler(ExternalScalerOptions{Demand: func(pool string) (float64, bool) { return 1, pool == "chat" }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pool, target, activation string, hasTarget, hasActivation bool) {
		md := map[string]string{MetadataPool: pool}
		if hasTarget {
			md[MetadataTargetConcurrency] = target
		}
		if hasActivation {
			md[MetadataActivationDemand] = activation
		}
		tr, err := s.trigger(ref(md))
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound {
				t.Fatalf("trigger(%v) = %v, want InvalidArgument or NotFound", md, err)
			}
			return
		}
		if tr.pool != "chat" || !(tr.target > 0) || math.IsInf(tr.target, 0) || !(tr.activation >= 0) || math.IsInf(tr.activation, 0) {
			t.Fatalf("trigger(%v) = %+v", md, tr)
		}
	})
}
