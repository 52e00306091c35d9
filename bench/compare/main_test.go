package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(*testing.T, *options)
		wantErr string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *options) {
				if o.out != "bench/results" || o.rounds != 3 || !o.scenarios["micro"] || !o.balCrossCheck || len(o.proxies) != 4 {
					t.Errorf("defaults: %+v", o)
				}
			},
		},
		{
			name: "quick shortens what was not set",
			args: []string{"-quick", "-balance-duration", "9s"},
			check: func(t *testing.T, o *options) {
				if o.out != "bench/.quick" || o.rounds != 1 || o.scenarios["micro"] || o.balCrossCheck {
					t.Errorf("quick: %+v", o)
				}
				if o.balDuration != 9*time.Second || o.wrkDuration != 3*time.Second {
					t.Errorf("quick durations: balance %v wrk %v", o.balDuration, o.wrkDuration)
				}
			},
		},
		{
			name: "subsets",
			args: []string{"-scenarios", "overhead, micro", "-proxies", "nginx"},
			check: func(t *testing.T, o *options) {
				if len(o.scenarios) != 2 || !o.scenarios["overhead"] || !o.scenarios["micro"] || len(o.proxies) != 1 || !o.proxies["nginx"] {
					t.Errorf("subsets: scenarios %v proxies %v", o.scenarios, o.proxies)
				}
			},
		},
		{name: "unknown proxy", args: []string{"-proxies", "envoy"}, wantErr: `unknown name "envoy"`},
		{name: "too many slow", args: []string{"-balance-replicas", "3", "-balance-slow", "3"}, wantErr: "-balance-slow"},
		{name: "short duration", args: []string{"-wrk-duration", "10ms"}, wantErr: "shorter than 1s"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}
