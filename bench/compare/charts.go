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
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
)

// series is one set of bars, a value per category; NaN draws no bar.
type series struct {
	Name   string
	Values []float64
}

// barChart is a horizontal grouped bar chart: one row per category, one
// bar per series in each row, the value written at the end of each bar.
type barChart struct {
	Title, Axis string
	Categories  []string
	Series      []series
	// Ref, when not NaN, draws a dashed vertical line at that value,
	// labeled RefLabel in the legend.
	Ref      float64
	RefLabel string
	// Cap, when > 0, draws values above it (and +Inf) as bars of length
	// Cap labeled with CapLabel, so that an infinite or huge value does not
	// flatten the others.
	Cap      float64
	CapLabel string
	// Format writes a bar's value label.
	Format func(float64) string
}

func (c *barChart) save(path string) error {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.Axis
	p.X.Tick.Marker = plot.TickerFunc(niceTicks)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())

	n, k := len(c.Categories), len(c.Series)
	rowHeight := vg.Points(float64(14*k + 10))
	barWidth := vg.Points(12)
	maxV, minV := 0.0, 0.0
	for si, s := range c.Series {
		// Row i of the data is drawn at y = n-1-i, so the first category
		// is at the top.
		vals := make(plotter.Values, n)
		labels := make([]string, n)
		xys := make(plotter.XYs, n)
		for i := range n {
			v := math.NaN()
			if i < len(s.Values) {
				v = s.Values[i]
			}
			shown, label := v, ""
			switch {
			case math.IsNaN(v):
				shown, label = 0, "n/a"
			case c.Cap > 0 && v > c.Cap:
				shown, label = c.Cap, c.CapLabel
			default:
				label = c.Format(v)
			}
			maxV, minV = max(maxV, shown), min(minV, shown)
			y := n - 1 - i
			vals[y], labels[y] = shown, label
			xys[y] = plotter.XY{X: shown, Y: float64(y)}
		}
		bars, err := plotter.NewBarChart(vals, barWidth)
		if err != nil {
			return fmt.Errorf("chart %s: %w", filepath.Base(path), err)
		}
		bars.Horizontal = true
		bars.Color = plotutil.Color(si)
		bars.LineStyle.Width = 0
		offset := barWidth * vg.Length(float64(k-1)/2-float64(si))
		bars.Offset = offset
		p.Add(bars)
		if k > 1 {
			p.Legend.Add(s.Name, bars)
		}
		lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
		if err != nil {
			return fmt.Errorf("chart %s: %w", filepath.Base(path), err)
		}
		for i := range lbl.TextStyle {
			lbl.TextStyle[i].YAlign = text.YCenter
			lbl.TextStyle[i].Font.Size = vg.Points(8)
		}
		lbl.Offset = vg.Point{X: vg.Points(3), Y: offset}
		p.Add(lbl)
	}
	if !math.IsNaN(c.Ref) {
		line, err := plotter.NewLine(plotter.XYs{{X: c.Ref, Y: -0.5}, {X: c.Ref, Y: float64(n) - 0.5}})
		if err != nil {
			return fmt.Errorf("chart %s: %w", filepath.Base(path), err)
		}
		line.Color = color.Gray{Y: 80}
		line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(line)
		p.Legend.Add(c.RefLabel, line)
		maxV = max(maxV, c.Ref)
	}
	// Room on the right for the value labels; negative values (an added
	// latency below the baseline's, which is noise) extend to the left.
	span := max(maxV-minV, 1e-9)
	p.X.Max = maxV + 0.25*span
	p.X.Min = 0
	if minV < 0 {
		p.X.Min = minV - 0.05*span
	}
	names := make([]string, n)
	for i, cat := range c.Categories {
		names[n-1-i] = cat
	}
	p.NominalY(names...)
	// Empty room above the first row for the legend, so it covers no bar.
	entries := k
	if k == 1 {
		entries = 0
	}
	if !math.IsNaN(c.Ref) {
		entries++
	}
	legend := vg.Points(float64(16*entries + 4))
	p.Y.Min, p.Y.Max = -0.5, float64(n)-0.5+float64(legend/rowHeight)
	height := rowHeight*vg.Length(n) + legend + vg.Points(90)
	if err := p.Save(7*vg.Inch, height, path); err != nil {
		return fmt.Errorf("chart %s: %w", filepath.Base(path), err)
	}
	return nil
}

// niceTicks places about five major ticks at round values (1, 2 or 5
// times a power of ten) labeled without needless decimals.
func niceTicks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return nil
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{2, 5, 10} {
		if math.Abs(m*mag-raw) < math.Abs(step-raw) {
			step = m * mag
		}
	}
	decimals := max(0, -int(math.Floor(math.Log10(step))))
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		if math.Abs(v) < step*1e-9 {
			v = 0
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
	}
	return ticks
}

// drawCharts writes the report's charts as PNGs into dir and returns their
// file names by chart name.
func drawCharts(r *report, dir string) (map[string]string, error) {
	files := map[string]string{}
	add := func(name string, c *barChart) error {
		if len(c.Categories) == 0 {
			return nil
		}
		file := name + ".png"
		if err := c.save(filepath.Join(dir, file)); err != nil {
			return err
		}
		files[name] = file
		return nil
	}
	num := func(v float64) string { return fmtNum(v) }

	if o := r.Overhead; o != nil {
		var cats []string
		var ratio, p50, p99 []float64
		for _, row := range o.Rows {
			if row.Target == "direct" || len(row.Wrk) == 0 {
				continue
			}
			cats = append(cats, row.Target)
			ratio = append(ratio, row.ThroughputRatio)
			p50, p99 = append(p50, row.AddedP50), append(p99, row.AddedP99)
		}
		err := add("overhead_throughput", &barChart{
			Title: "Throughput through each proxy, relative to the backend directly (higher is better)",
			Axis:  "throughput / direct throughput", Categories: cats,
			Series: []series{{"× direct", ratio}},
			Ref:    1, RefLabel: "direct", Format: func(v float64) string { return fmt.Sprintf("%.2f×", v) },
		})
		if err != nil {
			return nil, err
		}
		err = add("overhead_latency", &barChart{
			Title: fmt.Sprintf("Latency added at %g req/s, open loop (lower is better)", r.Settings.LatencyRate),
			Axis:  "added latency vs direct (ms)", Categories: cats,
			Series: []series{{"added p50", p50}, {"added p99", p99}},
			Ref:    math.NaN(), Format: func(v float64) string { return fmt.Sprintf("%+.3f ms", v) },
		})
		if err != nil {
			return nil, err
		}
	}
	if s := r.Streaming; s != nil {
		var cats []string
		var t50, t99, i99 []float64
		for _, row := range s.Rows {
			if row.Target == "direct" || len(row.Rounds) == 0 {
				continue
			}
			cats = append(cats, row.Target)
			t50, t99, i99 = append(t50, row.AddedTTFTP50), append(t99, row.AddedTTFTP99), append(i99, row.AddedITLP99)
		}
		err := add("streaming", &barChart{
			Title: "Streaming: time to first token and inter-token latency added (lower is better)",
			Axis:  "added vs direct (ms)", Categories: cats,
			Series: []series{{"added TTFT p50", t50}, {"added TTFT p99", t99}, {"added ITL p99", i99}},
			Ref:    math.NaN(), Format: func(v float64) string { return fmt.Sprintf("%+.2f ms", v) },
		})
		if err != nil {
			return nil, err
		}
	}
	if b := r.Balancing; b != nil {
		var cats []string
		var p50, p99 []float64
		for _, row := range b.Rows {
			if row.Error != "" || row.Stream != b.Stream {
				continue
			}
			cats = append(cats, row.Label(b.Stream))
			p50, p99 = append(p50, row.Latency.P50), append(p99, float64(row.P99All))
		}
		oracle := math.NaN()
		if o := b.row("oracle", "", b.Stream); o != nil && o.Error == "" {
			oracle = float64(o.P99All)
		}
		// Infinite p99s (runs that lost requests) are drawn just past the
		// longest finite one, so the finite ones keep their scale.
		capMS := 0.0
		for _, v := range p99 {
			if math.IsInf(v, 1) {
				for _, f := range p99 {
					if !math.IsInf(f, 1) {
						capMS = max(capMS, 1.15*f)
					}
				}
				capMS = max(capMS, 1)
				break
			}
		}
		err := add("balancing", &barChart{
			Title: fmt.Sprintf("Latency with %d of %d replicas %g× slow, %.0f req/s (lower is better)",
				b.Slow, b.Replicas, b.SlowSim.Slowdown, b.Rate),
			Axis:       "end-to-end latency (ms); p99 counts failed requests as infinitely slow",
			Categories: cats,
			Series:     []series{{"p50", p50}, {"p99", p99}},
			Ref:        oracle, RefLabel: "oracle p99",
			Cap: capMS, CapLabel: "∞: over 1% failed", Format: func(v float64) string { return num(v) + " ms" },
		})
		if err != nil {
			return nil, err
		}
	}
	if f := r.Frontier; f != nil {
		drawn, err := drawFrontier(f, filepath.Join(dir, "frontier.png"))
		if err != nil {
			return nil, err
		}
		if drawn {
			files["frontier"] = "frontier.png"
		}
	}
	if m := r.Memory; m != nil {
		var cats []string
		var idle, stream []float64
		for _, row := range m.Rows {
			if !row.Idle.measured() && !row.Streams.measured() {
				continue
			}
			cats = append(cats, row.Target)
			v := func(s *memorySample) float64 {
				if !s.measured() {
					return math.NaN()
				}
				return s.PssPer
			}
			idle, stream = append(idle, v(row.Idle)), append(stream, v(row.Streams))
		}
		err := add("memory", &barChart{
			Title: "Memory per idle keep-alive connection and per open SSE stream (lower is better)",
			Axis:  fmt.Sprintf("KiB of Pss per connection (%d open) or stream (%d open)", m.Conns, m.Streams), Categories: cats,
			Series: []series{{"per idle connection", idle}, {"per stream", stream}},
			Ref:    16, RefLabel: "16 KiB: sluice's goal per idle connection",
			Format: func(v float64) string { return fmt.Sprintf("%.1f KiB", v) },
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}
