package autoscale

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HistoryPoint is one past demand sample.
type HistoryPoint struct {
	Time   time.Time
	Demand float64
}

// maxHistoryLine bounds one line of a history file.
const maxHistoryLine = 4096

// ParseHistory reads a demand history: one "time,demand" per line, the time
// in unix seconds (fractions allowed) or RFC 3339, the demand a
// non-negative number. Blank lines, lines starting with # and a header
// line whose demand is not a number are skipped. The points come back in
// time order.
func ParseHistory(r io.Reader) ([]HistoryPoint, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxHistoryLine)
	var pts []HistoryPoint
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		ts, val, ok := strings.Cut(text, ",")
		if !ok {
			return nil, fmt.Errorf("line %d: want time,demand, got %q", line, text)
		}
		ts, val = strings.TrimSpace(ts), strings.TrimSpace(val)
		y, err := strconv.ParseFloat(val, 64)
		if err != nil {
			if line == 1 && len(pts) == 0 {
				continue // a header
			}
			return nil, fmt.Errorf("line %d: demand %q is not a number", line, val)
		}
		if y < 0 || math.IsNaN(y) || math.IsInf(y, 0) {
			return nil, fmt.Errorf("line %d: demand %q must be a non-negative number", line, val)
		}
		t, err := parseHistoryTime(ts)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		pts = append(pts, HistoryPoint{Time: t, Demand: y})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	slices.SortStableFunc(pts, func(a, b HistoryPoint) int { return a.Time.Compare(b.Time) })
	return pts, nil
}

func parseHistoryTime(s string) (time.Time, error) {
	if sec, err := strconv.ParseFloat(s, 64); err == nil {
		// Years 1970 to 2200 in seconds; anything else is a typo.
		if !(sec >= 0 && sec < 7.3e9) {
			return time.Time{}, fmt.Errorf("time %q is out of range", s)
		}
		whole, frac := math.Modf(sec)
		return time.Unix(int64(whole), int64(frac*1e9)).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is neither unix seconds nor RFC 3339", s)
	}
	return t, nil
}

// Train feeds past points into f, in time order, skipping any after now
// (live samples will cover those). It returns how many were used.
func (f *Forecast) Train(pts []HistoryPoint, now time.Time) int {
	n := 0
	for _, p := range pts {
		if p.Time.After(now) {
			break
		}
		f.Observe(p.Time, p.Demand)
		n++
	}
	return n
}

// TrainFromFile parses the history file at path and trains f on it.
func TrainFromFile(f *Forecast, path string, now time.Time) (int, error) {
	file, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("predictive history: %w", err)
	}
	defer file.Close()
	pts, err := ParseHistory(file)
	if err != nil {
		return 0, fmt.Errorf("predictive history %s: %w", path, err)
	}
	return f.Train(pts, now), nil
}
