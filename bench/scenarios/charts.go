package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// lineSeries is one line of a lineChart.
type lineSeries struct {
	Name   string
	Points []point
	// Step draws the value as held until the next point (a sampled
	// gauge) instead of interpolating.
	Step bool
	// Gray draws a dashed gray line, for a reference such as demand.
	Gray bool
	// Scatter draws marks instead of a line.
	Scatter bool
}

// rule is a labeled reference line across the chart.
type rule struct {
	At       float64
	Label    string
	Vertical bool
}

// lineChart is a chart of values over time.
type lineChart struct {
	Title, X, Y string
	Series      []lineSeries
	Rules       []rule
	LogY        bool
	// Top, when > 0, is where values above it and infinite ones are drawn,
	// so one failure does not flatten the rest.
	Top float64
	// XMax, when > 0, ends the time axis.
	XMax float64
}

func (c *lineChart) save(path string) error {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.X
	p.Y.Label.Text = c.Y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	if c.LogY {
		p.Y.Scale = plot.LogScale{}
	}
	fail := func(err error) error { return fmt.Errorf("chart %s: %w", filepath.Base(path), err) }
	xmax, ymin, ymax := 0.0, math.Inf(1), 0.0
	colorIndex := 0
	for _, s := range c.Series {
		xys := make(plotter.XYs, 0, len(s.Points))
		for _, pt := range s.Points {
			v := pt.V
			if math.IsNaN(v) {
				continue
			}
			if c.Top > 0 && (v > c.Top || math.IsInf(v, 1)) {
				v = c.Top
			}
			if math.IsInf(v, 0) {
				continue
			}
			if c.LogY {
				v = max(v, 1)
			}
			xys = append(xys, plotter.XY{X: pt.T, Y: v})
			xmax, ymin, ymax = max(xmax, pt.T), min(ymin, v), max(ymax, v)
		}
		if len(xys) == 0 {
			continue
		}
		if s.Scatter {
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return fail(err)
			}
			sc.GlyphStyle.Shape = draw.CrossGlyph{}
			sc.GlyphStyle.Color = color.RGBA{R: 200, A: 255}
			p.Add(sc)
			p.Legend.Add(s.Name, sc)
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fail(err)
		}
		l.Width = vg.Points(1.5)
		if s.Step {
			l.StepStyle = plotter.PostStep
		}
		if s.Gray {
			l.Color = color.Gray{Y: 110}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		} else {
			l.Color = plotutil.Color(colorIndex)
			colorIndex++
		}
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	if math.IsInf(ymin, 1) {
		ymin = 1
	}
	for _, r := range c.Rules {
		if r.Vertical {
			xmax = max(xmax, r.At)
		} else {
			ymax = max(ymax, r.At)
			ymin = min(ymin, r.At)
		}
	}
	// Head room above the data for the legend, one line per entry.
	entries := float64(len(c.Series) + len(c.Rules))
	p.X.Min, p.X.Max = 0, max(xmax, 1)
	if c.XMax > 0 {
		p.X.Max = c.XMax
	}
	if c.LogY {
		p.Y.Min = max(ymin/1.5, 1)
		p.Y.Max = max(ymax, 1) * math.Pow(max(ymax, 1)/p.Y.Min, 0.09*entries) * 1.2
		p.Y.Tick.Marker = logTicks{}
	} else {
		p.Y.Min = 0
		p.Y.Max = max(ymax, 1e-9) * (1.1 + 0.09*entries)
	}
	for _, r := range c.Rules {
		xys := plotter.XYs{{X: 0, Y: r.At}, {X: p.X.Max, Y: r.At}}
		if r.Vertical {
			xys = plotter.XYs{{X: r.At, Y: p.Y.Min}, {X: r.At, Y: p.Y.Max}}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fail(err)
		}
		l.Color = color.Gray{Y: 60}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
		p.Legend.Add(r.Label, l)
	}
	if err := p.Save(8*vg.Inch, 4*vg.Inch, path); err != nil {
		return fail(err)
	}
	return nil
}

// drawCharts writes the report's charts into dir and returns their file
// names by chart name.
func drawCharts(r *report, dir string) (map[string]string, error) {
	files := map[string]string{}
	add := func(name string, c *lineChart) error {
		file := "scenarios_" + name + ".png"
		if err := c.save(filepath.Join(dir, file)); err != nil {
			return err
		}
		files[name] = file
		return nil
	}
	if o := r.Overload; o != nil {
		gauge := func(samples []sample) []point {
			out := make([]point, 0, len(samples))
			for _, s := range samples {
				out = append(out, point{s.At.Seconds(), float64(s.InFlight)})
			}
			return out
		}
		c := &lineChart{
			Title: fmt.Sprintf("Requests inside the gateway at %.0f× capacity", o.OfferedFactor),
			X:     "seconds", Y: "in flight + queued (log)", LogY: true,
			Series: []lineSeries{
				{Name: "with admission control", Points: gauge(o.Admission.Samples), Step: true},
				{Name: "without (no cap, no queue)", Points: gauge(o.NoAdmission.Samples), Step: true},
			},
			Rules: []rule{{At: float64(o.Sims*o.MaxConcurrency + o.QueueSize), Label: "slots + queue size"}},
		}
		if err := add("overload", c); err != nil {
			return nil, err
		}
	}
	if k := r.Kill; k != nil {
		top := 0.0
		for _, p := range k.Timeline {
			if !math.IsInf(p.V, 0) {
				top = max(top, p.V)
			}
		}
		var fails []point
		for _, t := range k.FailuresAt {
			fails = append(fails, point{t, top * 1.1})
		}
		c := &lineChart{
			Title: "p99 latency per second of send time; one of four replicas killed",
			X:     "seconds", Y: "ms",
			Series: []lineSeries{
				{Name: "p99 of successful requests", Points: k.Timeline},
				{Name: "a failed request (sent then)", Points: fails, Scatter: true},
			},
			Rules: []rule{{At: k.KillAtS, Label: "kill -9", Vertical: true}},
			XMax:  k.DurationS,
		}
		if err := add("kill", c); err != nil {
			return nil, err
		}
	}
	if p := r.Priorities; p != nil {
		c := &lineChart{Title: "Median latency per second of send time, by priority", X: "seconds", Y: "ms (log)", LogY: true, XMax: p.DurationS}
		for _, cl := range p.Classes {
			c.Series = append(c.Series, lineSeries{Name: cl.Priority, Points: cl.Timeline})
		}
		if err := add("priorities", c); err != nil {
			return nil, err
		}
	}
	if a := r.Autoscale; a != nil && len(a.Configs) > 0 {
		total := totalDuration(a.Phases)
		var need []point
		var t float64
		for _, ph := range a.Phases {
			need = append(need, point{t, ph.Rate / (a.Utilization * a.ReplicaCapacity)})
			t += ph.Duration.Seconds()
		}
		need = append(need, point{t, need[len(need)-1].V})
		rc := &lineChart{
			Title: "Ready replicas over the trace",
			X:     "seconds", Y: "replicas",
			Series: []lineSeries{{Name: fmt.Sprintf("offered load / (%.0f%% of a replica)", a.Utilization*100), Points: need, Step: true, Gray: true}},
			XMax:   total.Seconds(),
		}
		lc := &lineChart{
			Title: "p99 latency per 2 s of send time",
			X:     "seconds", Y: "ms (log)", LogY: true,
			Rules: []rule{{At: a.SLOMs, Label: "SLO"}},
			XMax:  total.Seconds(),
		}
		for _, c := range a.Configs {
			var ready []point
			for _, s := range c.Samples {
				if s.At >= 0 && s.At <= total {
					ready = append(ready, point{s.At.Seconds(), float64(s.Ready)})
				}
			}
			name := fmt.Sprintf("%s (%s)", c.Name, c.Replicas)
			rc.Series = append(rc.Series, lineSeries{Name: name, Points: ready, Step: true})
			lc.Series = append(lc.Series, lineSeries{Name: name, Points: c.Timeline})
		}
		top := 0.0
		for _, c := range a.Configs {
			for _, p := range c.Timeline {
				if !math.IsInf(p.V, 0) {
					top = max(top, p.V)
				}
			}
		}
		lc.Top = top
		if err := add("autoscale_replicas", rc); err != nil {
			return nil, err
		}
		if err := add("autoscale_latency", lc); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// logTicks labels a log axis at 1, 2 and 5 times each power of ten, with
// unlabeled minor ticks between, so a reader can read values off it.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for p := math.Floor(math.Log10(lo)); p <= math.Ceil(math.Log10(hi)); p++ {
		base := math.Pow(10, p)
		for m := 1; m < 10; m++ {
			v := float64(m) * base
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'f', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
