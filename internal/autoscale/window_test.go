package autoscale

import (
	"math"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	type add struct {
		at time.Duration
		v  float64
	}
	tests := []struct {
		name     string
		span     time.Duration
		adds     []add
		at       time.Duration
		avg, max float64
		ok       bool
	}{
		{"empty", 10 * time.Second, nil, 0, 0, 0, false},
		{"mean of samples in span", 10 * time.Second, []add{{0, 2}, {time.Second, 4}, {2 * time.Second, 6}}, 2 * time.Second, 4, 6, true},
		{"old buckets expire", 3 * time.Second, []add{{0, 100}, {time.Second, 1}, {3 * time.Second, 3}}, 3 * time.Second, 2, 3, true},
		{"all expired", 3 * time.Second, []add{{0, 5}}, 10 * time.Second, 0, 0, false},
		{"several samples in one bucket", 10 * time.Second, []add{{0, 1}, {100 * time.Millisecond, 3}}, 500 * time.Millisecond, 2, 3, true},
		{"ring reuse after wrap", 2 * time.Second, []add{{0, 9}, {time.Second, 9}, {2 * time.Second, 1}, {3 * time.Second, 3}}, 3 * time.Second, 2, 3, true},
		{"span below granularity keeps one bucket", 0, []add{{0, 1}, {time.Second, 7}}, time.Second, 7, 7, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(tt.span, time.Second)
			for _, a := range tt.adds {
				w.add(epoch.Add(a.at), a.v)
			}
			avg, ok := w.avg(epoch.Add(tt.at))
			if ok != tt.ok || math.Abs(avg-tt.avg) > 1e-9 {
				t.Errorf("avg = %v, %v; want %v, %v", avg, ok, tt.avg, tt.ok)
			}
			if m, ok := w.max(epoch.Add(tt.at)); ok != tt.ok || (ok && m != tt.max) {
				t.Errorf("max = %v, %v; want %v, %v", m, ok, tt.max, tt.ok)
			}
		})
	}
}

func TestWindowBeforeEpoch(t *testing.T) {
	// Negative bucket numbers (times before 1970) index the ring too.
	w := newWindow(3*time.Second, time.Second)
	old := time.Date(1969, 12, 31, 23, 59, 50, 0, time.UTC)
	w.add(old, 4)
	if avg, ok := w.avg(old); !ok || avg != 4 {
		t.Errorf("avg = %v, %v; want 4", avg, ok)
	}
}
