package autoscale

import (
	"math"
	"testing"
	"time"
)

func TestForecastLearnsASeason(t *testing.T) {
	const season = time.Hour
	wave := func(t time.Duration) float64 {
		return 20 + 10*math.Sin(2*math.Pi*float64(t%season)/float64(season))
	}
	tests := []struct {
		name string
		gap  bool // a quarter season without samples in the third season
	}{
		{"continuous", false},
		{"with a gap", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewForecast(season, time.Second)
			if f.Slot() != 2500*time.Millisecond {
				t.Fatalf("slot %s, want 2.5s (1440 per hour)", f.Slot())
			}
			for s := time.Duration(0); s < 4*season; s += time.Second {
				if tt.gap && s >= 2*season && s < 2*season+season/4 {
					continue
				}
				f.Observe(epoch.Add(s), wave(s))
				if s == season-2*time.Second && f.Ready() {
					t.Fatal("ready before one season")
				}
			}
			if !f.Ready() {
				t.Fatal("not ready after four seasons")
			}
			now := 4 * season
			for _, ahead := range []time.Duration{0, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute} {
				got, ok := f.Peak(epoch.Add(now+ahead), 0)
				want := wave(now + ahead)
				if !ok || math.Abs(got-want) > 1.5 {
					t.Errorf("forecast %s ahead = %.2f, want %.2f ± 1.5", ahead, got, want)
				}
			}
			// Peak over a lead covers the crest a quarter season ahead.
			if got, _ := f.Peak(epoch.Add(now), 20*time.Minute); got < 28.5 {
				t.Errorf("peak over the next 20 min = %.2f, want the crest ≈ 30", got)
			}
		})
	}
}

func TestForecastNeverNegative(t *testing.T) {
	f := NewForecast(10*time.Minute, time.Second)
	for s := time.Duration(0); s < 30*time.Minute; s += time.Second {
		v := 0.0
		if s%(10*time.Minute) < time.Minute {
			v = 50
		}
		f.Observe(epoch.Add(s), v)
	}
	for s := time.Duration(0); s < 10*time.Minute; s += 10 * time.Second {
		if got, _ := f.Peak(epoch.Add(30*time.Minute+s), 0); got < 0 {
			t.Fatalf("forecast %.2f < 0", got)
		}
	}
}
