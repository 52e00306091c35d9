package jobs

import (
	"math/rand/v2"
	"time"
)

// Upper bounds of the retry delays.
const (
	maxRetryBackoff    = time.Minute
	maxCallbackBackoff = 10 * time.Minute
)

// backoff is the delay before retry n (1 for the first retry): base doubled
// per retry, capped at max, with "equal jitter" — a uniformly random value
// in [d/2, d] — so that jobs failing together do not retry together.
func backoff(base, max time.Duration, n int) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(d-half+1)
}
