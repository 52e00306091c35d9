package bench

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

const (
	progressTick = 200 * time.Millisecond
	// rateWindow is how many ticks the current req/s is averaged over.
	rateWindow = 5
)

// progress draws a run's progress bar: time through the run, counts so far
// and the recent request rate.
type progress struct {
	bar   *progressbar.ProgressBar
	r     *runner
	total time.Duration
	// recent holds the OK count at the last rateWindow+1 ticks.
	recent [rateWindow + 1]struct {
		at time.Time
		ok int64
	}
	ticks int
}

func newProgress(w io.Writer, r *runner) *progress {
	total := r.end.Sub(r.start)
	return &progress{
		r:     r,
		total: total,
		bar: progressbar.NewOptions64(total.Milliseconds(),
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetRenderBlankState(true),
		),
	}
}

// run redraws the bar every tick until stop is closed, then clears it.
func (p *progress) run(stop <-chan struct{}) {
	t := time.NewTicker(progressTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			// The bar is cleared from the terminal; an error here has no
			// one to go to.
			_ = p.bar.Finish()
			return
		case now := <-t.C:
			p.update(now)
		}
	}
}

func (p *progress) update(now time.Time) {
	r := p.r
	elapsed := min(now.Sub(r.start), p.total)
	ok := r.ok.Load()
	slot := &p.recent[p.ticks%len(p.recent)]
	slot.at, slot.ok = now, ok
	p.ticks++
	oldest := p.recent[p.ticks%len(p.recent)]
	if p.ticks < len(p.recent) {
		oldest = p.recent[0]
	}
	rate := 0.0
	if d := now.Sub(oldest.at); d > 0 {
		rate = float64(ok-oldest.ok) / d.Seconds()
	}

	var desc string
	switch {
	case now.Before(r.measureFrom):
		desc = fmt.Sprintf("warmup %v/%v  in flight %d",
			elapsed.Truncate(100*time.Millisecond), r.measureFrom.Sub(r.start), r.inFlight.Load())
	case now.Before(r.end):
		desc = fmt.Sprintf("%v/%v  sent %d  ok %d  errors %d  %.1f req/s",
			now.Sub(r.measureFrom).Truncate(100*time.Millisecond), r.cfg.Duration,
			r.sent.Load(), ok, r.failed.Load(), rate)
	default:
		desc = fmt.Sprintf("done, waiting for %d in flight  sent %d  ok %d  errors %d",
			r.inFlight.Load(), r.sent.Load(), ok, r.failed.Load())
	}
	p.bar.Describe(desc)
	// A terminal that cannot be drawn on is no reason to stop the run.
	_ = p.bar.Set64(elapsed.Milliseconds())
}
