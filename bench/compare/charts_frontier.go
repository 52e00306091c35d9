package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// frontierCap is the highest added p99, in ms, the frontier chart shows;
// looks above it, or that fell behind the offered rate, are drawn at it.
// frontierFloor is the lowest: a negative added p99 is the direct
// measurement's bad luck, and ones below it are drawn at it.
const (
	frontierCap   = 10
	frontierFloor = -3
)

// drawFrontier writes the frontier chart: each proxy's added p99 against
// the offered rate (its best look at each rate), the bounds as horizontal
// lines and the direct ceiling as a vertical one. It reports whether there
// was anything to draw.
func drawFrontier(f *frontierResult, path string) (bool, error) {
	p := plot.New()
	p.Title.Text = "Added p99 latency vs offered rate, constant-rate open loop (lower is better)"
	p.X.Label.Text = "offered rate (req/s, log scale)"
	p.Y.Label.Text = fmt.Sprintf("p99 − direct p99 at the same rate (ms); x: over %g ms or fell behind", float64(frontierCap))
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.TickerFunc(func(lo, hi float64) []plot.Tick { return doublingTicks(f.Base, lo, hi) })
	p.Y.Tick.Marker = plot.TickerFunc(niceTicks)
	// The legend goes beside the plot, where it covers no point.
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	p.Add(plotter.NewGrid())

	lo, hi := math.Inf(1), 0.0
	drawn := 0
	for i, row := range f.Rows {
		if row.Target == "direct" || len(row.Points) == 0 {
			continue
		}
		var ks []int
		for _, pt := range row.Points {
			if !slices.Contains(ks, pt.K) {
				ks = append(ks, pt.K)
			}
		}
		slices.Sort(ks)
		var in, out plotter.XYs
		for _, k := range ks {
			b := row.shown(k, f.BoundsMS[len(f.BoundsMS)-1])
			lo, hi = min(lo, b.Rate), max(hi, b.Rate)
			if b.sustained() && b.DirectSustained && b.AddedP99 <= frontierCap {
				in = append(in, plotter.XY{X: b.Rate, Y: max(b.AddedP99, frontierFloor)})
			} else {
				out = append(out, plotter.XY{X: b.Rate, Y: frontierCap})
			}
		}
		c := plotutil.Color(i - 1)
		if len(in) > 0 {
			line, points, err := plotter.NewLinePoints(in)
			if err != nil {
				return false, fmt.Errorf("chart %s: %w", filepath.Base(path), err)
			}
			line.Color, points.Color = c, c
			points.Shape = draw.CircleGlyph{}
			p.Add(line, points)
			legend.Add(row.Target, line, points)
			drawn++
		}
		if len(out) > 0 {
			sc, err := plotter.NewScatter(out)
			if err != nil {
				return false, fmt.Errorf("chart %s: %w", filepath.Base(path), err)
			}
			sc.Color = c
			sc.Shape = draw.CrossGlyph{}
			sc.Radius = vg.Points(4)
			p.Add(sc)
			if len(in) == 0 {
				legend.Add(row.Target, sc)
				drawn++
			}
		}
	}
	if drawn == 0 {
		return false, nil
	}
	if d := f.row("direct"); d != nil && len(d.Edges) > 0 && d.Edges[0].Rate > 0 {
		ceiling := d.Edges[0].Rate
		hi = max(hi, ceiling)
		v, err := plotter.NewLine(plotter.XYs{{X: ceiling, Y: frontierFloor - 0.5}, {X: ceiling, Y: frontierCap + 0.5}})
		if err != nil {
			return false, fmt.Errorf("chart %s: %w", filepath.Base(path), err)
		}
		v.Color = color.Gray{Y: 60}
		v.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
		v.Width = vg.Points(1.5)
		p.Add(v)
		legend.Add(fmt.Sprintf("ceiling %.0f/s", ceiling), v)
	}
	for _, bound := range f.BoundsMS {
		h, err := plotter.NewLine(plotter.XYs{{X: lo / 1.1, Y: bound}, {X: hi * 1.1, Y: bound}})
		if err != nil {
			return false, fmt.Errorf("chart %s: %w", filepath.Base(path), err)
		}
		h.Color = color.Gray{Y: 90}
		h.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(h)
		legend.Add(fmt.Sprintf("+%g ms", bound), h)
	}
	p.X.Min, p.X.Max = lo/1.1, hi*1.1
	p.Y.Min, p.Y.Max = frontierFloor-0.5, frontierCap+0.5
	const width, height, legendWidth = 10 * vg.Inch, 5 * vg.Inch, 2 * vg.Inch
	img := vgimg.New(width, height)
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, -legendWidth, 0, 0))
	legend.Draw(draw.Crop(dc, width-legendWidth+vg.Points(8), 0, 0, -vg.Points(30)))
	file, err := os.Create(path)
	if err == nil {
		_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(file)
		if cerr := file.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return false, fmt.Errorf("chart %s: %w", filepath.Base(path), err)
	}
	return true, nil
}

// shown is the look at grid point k the chart draws for a row: the first
// look within bound, which decided the rate; else the look with the lowest
// added p99. The lowest of several looks within the bound would draw the
// direct measurement's bad luck instead.
func (r *frontierRow) shown(k int, bound float64) *frontierPoint {
	for i := range r.Points {
		if p := &r.Points[i]; p.K == k && p.within(false, bound) {
			return p
		}
	}
	return r.best(k, false, bound)
}

// doublingTicks places ticks at base × 2^i within [lo, hi], labeled in
// req/s (k for thousands).
func doublingTicks(base, lo, hi float64) []plot.Tick {
	if !(base > 0) || !(hi > lo) || lo <= 0 {
		return nil
	}
	var ticks []plot.Tick
	v := base * math.Pow(2, math.Ceil(math.Log2(lo/base)-1e-9))
	for ; v <= hi*(1+1e-9); v *= 2 {
		ticks = append(ticks, plot.Tick{Value: v, Label: rateLabel(v)})
	}
	return ticks
}

// rateLabel prints a rate shortly: 500, 1k, 1.5k, 16k.
func rateLabel(v float64) string {
	if v < 1000 {
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	}
	return strconv.FormatFloat(math.Round(v/100)/10, 'f', -1, 64) + "k"
}
