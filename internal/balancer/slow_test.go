package balancer

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestP2CEWMALeavesOutSlowReplicas: a replica whose estimate is far above
// the pool's median gets nothing while a fast one remains, however many
// requests the fast ones have in flight (long streams keep them busy);
// when the slow ones are the majority, or too few replicas have a sample to
// tell, p2c_ewma's usual cost × load comparison decides.
func TestP2CEWMALeavesOutSlowReplicas(t *testing.T) {
	tests := []struct {
		name     string
		costs    []float64 // ms; 0 = no sample
		inFlight []int64
		never    []int // indexes never picked
		some     []int // indexes picked at least once
	}{
		{"one 8x slow of six, fast ones busy", []float64{10, 10, 11, 9, 10, 80}, []int64{9, 9, 9, 9, 9, 0}, []int{5}, []int{0, 1, 2, 3, 4}},
		{"two slow of six", []float64{10, 80, 10, 10, 80, 10}, []int64{9, 0, 9, 9, 0, 9}, []int{1, 4}, []int{0, 2, 3, 5}},
		{"every pair of slow ones", []float64{10, 80, 80, 80, 10, 10, 10, 10}, []int64{20, 0, 0, 0, 20, 20, 20, 20}, []int{1, 2, 3}, []int{0, 4}},
		{"under the factor: load decides", []float64{10, 10, 10, 10, 10, 25}, []int64{9, 9, 9, 9, 9, 0}, nil, []int{5}},
		{"slow majority is the pool", []float64{80, 80, 80, 80, 10, 10}, []int64{0, 0, 0, 0, 30, 30}, nil, []int{0, 1, 2, 3}},
		{"two samples are no majority", []float64{10, 80, 0, 0, 0, 0}, []int64{9, 0, 0, 0, 0, 0}, nil, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := fakes(len(tt.costs))
			for i, f := range fs {
				f.setCost(tt.costs[i] * 1e6)
				f.inFlight.Store(tt.inFlight[i])
			}
			got := counts(NewP2CEWMA(rand.NewPCG(1, 2)), backends(fs), 4000)
			for _, i := range tt.never {
				if got[fs[i].key] > 0 {
					t.Errorf("slow replica %d picked %d times: %v", i, got[fs[i].key], got)
				}
			}
			for _, i := range tt.some {
				if got[fs[i].key] == 0 {
					t.Errorf("replica %d never picked: %v", i, got)
				}
			}
		})
	}
}

func TestSelectNth(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := 1; n <= 40; n++ {
		for range 20 {
			s := make([]float64, n)
			for i := range s {
				s[i] = float64(r.IntN(6)) // many equal values
			}
			want := slices.Clone(s)
			slices.Sort(want)
			k := r.IntN(n)
			if got := selectNth(slices.Clone(s), k); got != want[k] {
				t.Fatalf("selectNth(%v, %d) = %v, want %v", s, k, got, want[k])
			}
		}
	}
}
