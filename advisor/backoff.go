package advisor

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// BackoffClass is how a device spaces its connection attempts.
type BackoffClass string

// Backoff classes, with the verdict each gets in the reconnect tests (advisor.md §3 MQTT and §5).
const (
	BackoffJitter      BackoffClass = "jitter"      // growing (or capped) and irregular: PASS
	BackoffExponential BackoffClass = "exponential" // growing by a steady factor, no jitter: WARN
	BackoffLinear      BackoffClass = "linear"      // growing by a steady amount: FAIL
	BackoffConstant    BackoffClass = "constant"    // not growing: FAIL
)

// BackoffThresholds are the numbers the classifier uses. AWS publishes no formula for "jitter",
// "exponential" and "linear", so ggbroker fixes one (advisor.md §5) and lets it be configured.
type BackoffThresholds struct {
	// MinDelays is how many inter-attempt delays a verdict needs (§5: n ≥ 5).
	MinDelays int
	// GrowthRatio: a median ratio r_i = d_{i+1}/d_i below it is no growth (§5: 1.3).
	GrowthRatio float64
	// ExponentialRatio: a steady factor at or above it is exponential (§5: 1.5); a steady factor
	// between GrowthRatio and this is exponential too, with a small factor.
	ExponentialRatio float64
	// JitterCV: a coefficient of variation of the ratios at or above it is jitter; below it the
	// factor is steady (§5: 0.1).
	JitterCV float64
	// CapTolerance: delays within this fraction of the largest are at the cap (a plateau counts as
	// non-decreasing, §5).
	CapTolerance float64
}

// DefaultBackoffThresholds are advisor.md §5's numbers.
var DefaultBackoffThresholds = BackoffThresholds{MinDelays: 5, GrowthRatio: 1.3, ExponentialRatio: 1.5, JitterCV: 0.1, CapTolerance: 0.1}

// BackoffAnalysis is the classifier's answer and the figures it came from.
type BackoffAnalysis struct {
	Class       BackoffClass
	Delays      []time.Duration
	MedianRatio float64
	RatioCV     float64
	Capped      bool
}

func (a BackoffAnalysis) String() string {
	ds := make([]string, len(a.Delays))
	for i, d := range a.Delays {
		ds[i] = formatSeconds(d)
	}
	s := fmt.Sprintf("%s backoff: delays %s, median ratio %.2f, ratio CV %.2f", a.Class, strings.Join(ds, ", "), a.MedianRatio, a.RatioCV)
	if a.Capped {
		s += ", capped"
	}
	return s
}

// ClassifyBackoff classifies the delays between a device's connection attempts (each measured from
// the moment the server dropped an attempt to the next attempt's arrival, so the server's own hold
// time is not counted).
//
// The rule (advisor.md §5): ratios r_i = d_{i+1}/d_i over the growing part of the sequence (a
// trailing plateau at the largest delay is the cap and is left out, and counts as non-decreasing);
//   - median r < GrowthRatio and no cap: constant (FAIL);
//   - delays that grow by a steady amount (every difference positive, CV of the differences below
//     JitterCV): linear (FAIL); the spec's median rule alone would call 1,2,3,4,5 s jitter;
//   - CV(r) < JitterCV: exponential, a steady factor (WARN);
//   - otherwise growing or capped and irregular: jitter (PASS).
func ClassifyBackoff(delays []time.Duration, th BackoffThresholds) (BackoffAnalysis, error) {
	a := BackoffAnalysis{Delays: delays}
	if len(delays) < th.MinDelays {
		return a, fmt.Errorf("%d delays between attempts measured, %d needed for a verdict", len(delays), th.MinDelays)
	}
	d := make([]float64, len(delays))
	maxD := 0.0
	for i, x := range delays {
		d[i] = math.Max(x.Seconds(), 1e-6)
		maxD = math.Max(maxD, d[i])
	}
	// Trailing plateau at the cap: at least two delays near the largest, after at least two
	// growing ones.
	p := len(d)
	for p > 0 && d[p-1] >= (1-th.CapTolerance)*maxD {
		p--
	}
	growth := d
	if len(d)-p >= 2 && p >= 2 {
		a.Capped = true
		growth = d[:p+1]
	}
	ratios := make([]float64, 0, len(growth)-1)
	diffs := make([]float64, 0, len(growth)-1)
	for i := 1; i < len(growth); i++ {
		ratios = append(ratios, growth[i]/growth[i-1])
		diffs = append(diffs, growth[i]-growth[i-1])
	}
	a.MedianRatio = median(ratios)
	a.RatioCV = cv(ratios)
	allPositive := true
	for _, x := range diffs {
		if x <= 0 {
			allPositive = false
		}
	}
	switch {
	case a.MedianRatio < th.GrowthRatio && !a.Capped:
		a.Class = BackoffConstant
		if allPositive && cv(diffs) < th.JitterCV {
			a.Class = BackoffLinear
		}
	case allPositive && len(diffs) >= 2 && cv(diffs) < th.JitterCV:
		a.Class = BackoffLinear
	case a.RatioCV < th.JitterCV:
		a.Class = BackoffExponential
	default:
		a.Class = BackoffJitter
	}
	return a, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cv is the coefficient of variation (population standard deviation over the mean).
func cv(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	mean := 0.0
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if mean == 0 {
		return 0
	}
	v := 0.0
	for _, x := range xs {
		v += (x - mean) * (x - mean)
	}
	return math.Sqrt(v/float64(len(xs))) / math.Abs(mean)
}

func formatSeconds(d time.Duration) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", d.Seconds()), "0"), ".") + "s"
}
