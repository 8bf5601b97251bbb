package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 12, 11}, 11},
	} {
		if got := Median(c.xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
	xs := []float64{3, 1, 2}
	Median(xs)
	if xs[0] != 3 || xs[1] != 1 {
		t.Errorf("Median sorted its argument in place: %v", xs)
	}
}

func TestMinMax(t *testing.T) {
	if lo, hi := MinMax([]float64{3, -1, 8, 2}); lo != -1 || hi != 8 {
		t.Errorf("MinMax = %v, %v, want -1, 8", lo, hi)
	}
	if lo, hi := MinMax(nil); lo != 0 || hi != 0 {
		t.Errorf("MinMax(nil) = %v, %v", lo, hi)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	for _, c := range []struct {
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{ms(5, 1, 3, 2, 4), 50, 3 * time.Millisecond},
		{ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{ms(5, 1, 3, 2, 4), 99, 5 * time.Millisecond},
		{ms(5, 1, 3, 2, 4), 100, 5 * time.Millisecond},
		{ms(5, 1, 3, 2, 4), 0, 1 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
		{nil, 50, 0},
	} {
		if got := Percentile(c.ds, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.ds, c.p, got, c.want)
		}
	}
}

func TestRatio(t *testing.T) {
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	p := Pair{A: []float64{10, 12, 11}, B: []float64{1, 1.2, 1.1}, LowerIsBetter: true}
	if r := p.Ratio(); !near(r, 10) {
		t.Errorf("lower is better: Ratio = %v, want 10", r)
	}
	p.LowerIsBetter = false
	if r := p.Ratio(); !near(r, 0.1) {
		t.Errorf("higher is better: Ratio = %v, want 0.1", r)
	}
	if r := (Pair{A: []float64{100}, B: []float64{400}}).Ratio(); !near(r, 4) {
		t.Errorf("higher is better, berth more: Ratio = %v, want 4", r)
	}
	for _, p := range []Pair{{}, {A: []float64{1}}, {B: []float64{1}}, {A: []float64{0}, B: []float64{1}, LowerIsBetter: true}} {
		if r := p.Ratio(); r != 0 {
			t.Errorf("undefined Ratio of %+v = %v, want 0", p, r)
		}
	}
}

func TestValueFormat(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{41.23, "s", "41.2 s"},
		{0.4521, "s", "0.452 s"},
		{3.14159, "s", "3.14 s"},
		{12.34, "ms", "12.3 ms"},
		{1234.6, "MB", "1235 MB"},
		{12, "requests", "12 requests"},
		{0.4521, "MB", "0.452 MB"},
		{3, "s", "3.00 s"},
		{0.00123, "s", "0.00123 s"},
		{7, "", "7"},
	} {
		if got := value(c.v, c.unit); got != c.want {
			t.Errorf("value(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func testRuns() []Run {
	var reqs []Latency
	for i := range 100 {
		reqs = append(reqs, Latency{At: time.Duration(i) * 20 * time.Millisecond, Took: time.Duration(i+1) * time.Millisecond, Failed: i%25 == 3})
	}
	return []Run{
		{Name: "berth", Requests: reqs, Switches: []Switch{{Start: 500 * time.Millisecond, End: 800 * time.Millisecond}, {Start: time.Second, End: 1100 * time.Millisecond}}},
		{Name: "original <script>", Requests: reqs[:50]},
	}
}

func TestMarkdown(t *testing.T) {
	f := Facts{CPU: "AMD Ryzen 7 (16 cores)", Memory: "32 GiB", FS: "ext4", Kernel: "6.1.0-18-amd64", Go: "go1.26.0", Date: "2025-11-23"}
	pairs := []Pair{
		{Group: "Base rootfs", Name: "cold build", Baseline: "debootstrap (bare)", Berth: "berth base:build", Unit: "s",
			A: []float64{10, 12, 11}, B: []float64{1, 1.2, 1.1}, LowerIsBetter: true, Repro: "sudo debootstrap --variant=minbase bookworm /tmp/r"},
		{Group: "Base to machine", Name: "copy", Baseline: "cp -a", Berth: "berth clone", Unit: "ms",
			A: []float64{10, 10}, B: []float64{20, 20}, LowerIsBetter: true, Note: "berth fsyncs every file", Repro: "cp -a /a /b"},
		{Group: "Base rootfs", Name: "throughput", Baseline: "x", Berth: "y", Unit: "requests", A: []float64{100}, B: []float64{300}},
	}
	var b bytes.Buffer
	if err := Markdown(&b, f, pairs, testRuns(), "benchmarks-latency.svg", "./mage bench\n"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# berth benchmarks\n",
		"`./mage bench`",
		"do not edit by hand",
		"## Machine",
		"| CPU | AMD Ryzen 7 (16 cores) |", "| Memory | 32 GiB |", "| Filesystem | ext4 |", "| Kernel | 6.1.0-18-amd64 |", "| Go | go1.26.0 |", "| Date | 2025-11-23 |",
		"## Base rootfs\n", "## Base to machine\n",
		"| measurement | baseline | median (min–max) | berth | median (min–max) | ratio |",
		"| cold build (n=3/3) | debootstrap (bare) | 11.0 s (10.0–12.0) | berth base:build | 1.10 s (1.00–1.20) | berth 10.0× better |",
		"| copy (n=2/2) | cp -a | 10.0 ms (10.0–10.0) | berth clone | 20.0 ms (20.0–20.0) | berth 2.0× worse |",
		"| throughput (n=1/1) | x | 100 requests (100–100) | y | 300 requests (300–300) | berth 3.0× better |",
		"- **copy**: berth fsyncs every file",
		"Reproduce by hand:",
		"- cold build: `sudo debootstrap --variant=minbase bookworm /tmp/r`",
		"- copy: `cp -a /a /b`",
		"## Switch availability\n",
		"| berth | 100 | 4 | ",
		"| original &lt;script> | 50 | 2 | ",
		"![latency over time](benchmarks-latency.svg)",
		"## Reproduce\n\n```sh\n./mage bench\n```\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q\n%s", want, md)
		}
	}
	// Groups appear once, in the order first seen; the berth run's p50 is over
	// its 96 successful requests; its switches last 300 and 100 ms.
	if strings.Count(md, "## Base rootfs") != 1 || strings.Index(md, "## Base rootfs") > strings.Index(md, "## Base to machine") {
		t.Errorf("group order wrong:\n%s", md)
	}
	if !strings.Contains(md, "| berth | 100 | 4 | 50.0 ms | 100 ms | 100 ms | 2 | 200 ms |") {
		t.Errorf("availability row wrong:\n%s", md)
	}
	if strings.Index(md, "## Switch availability") < strings.Index(md, "## Base to machine") {
		t.Errorf("availability section should follow the pair groups:\n%s", md)
	}
}

func TestMarkdownAvailabilityGroup(t *testing.T) {
	pairs := []Pair{
		{Group: "Switch availability", Name: "failed requests", Baseline: "original", Berth: "berth", Unit: "requests", A: []float64{12}, B: []float64{0}, LowerIsBetter: true},
		{Group: "Footprint", Name: "RSS", Baseline: "-", Berth: "berth", Unit: "MB", A: []float64{1}, B: []float64{1}},
	}
	var b bytes.Buffer
	if err := Markdown(&b, Facts{}, pairs, testRuns(), "c.svg", ""); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	if n := strings.Count(md, "## Switch availability"); n != 1 {
		t.Errorf("%d availability headings, want 1:\n%s", n, md)
	}
	table, chart, foot := strings.Index(md, "| run | requests |"), strings.Index(md, "![latency over time](c.svg)"), strings.Index(md, "## Footprint")
	if table < 0 || chart < 0 || table > foot || chart > foot {
		t.Errorf("runs table should sit in the Switch availability group:\n%s", md)
	}
	if !strings.Contains(md, "| 1 MB (1–1) | about the same |") {
		t.Errorf("equal medians should read about the same:\n%s", md)
	}
	if strings.Contains(md, "## Reproduce\n") || !strings.Contains(md, "| failed requests (n=1/1) | original | 12 requests (12–12) | berth | 0 requests (0–0) | — |") {
		t.Errorf("unexpected output:\n%s", md)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrors(t *testing.T) {
	if err := Markdown(failWriter{}, Facts{}, nil, nil, "", ""); err == nil {
		t.Error("Markdown swallowed the write error")
	}
	if err := SVG(failWriter{}, nil, 100, 100); err == nil {
		t.Error("SVG swallowed the write error")
	}
}

// parseSVG walks all tokens and counts elements by name.
func parseSVG(t *testing.T, svg []byte) map[string]int {
	t.Helper()
	counts := map[string]int{}
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			counts[se.Name.Local]++
		}
	}
	return counts
}

func TestSVG(t *testing.T) {
	var b bytes.Buffer
	if err := SVG(&b, testRuns(), 800, 300); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	counts := parseSVG(t, b.Bytes())
	if counts["svg"] != 1 || counts["polyline"] != 2 {
		t.Errorf("want one svg and 2 polylines, got %v", counts)
	}
	for _, want := range []string{">berth<", ">original &lt;script&gt;<", "seconds since start", "latency (ms, log)", ">1000<", ">100<", ">10<", ">1<", "fill-opacity", "#d62728", "#1f77b4"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "@import", "href", "NaN", "Inf"} {
		if strings.Contains(svg, bad) {
			t.Errorf("SVG contains %q", bad)
		}
	}
}

func TestSVGEdgeCases(t *testing.T) {
	for name, runs := range map[string][]Run{
		"none":     nil,
		"empty":    {{Name: "x"}},
		"zero":     {{Name: "z", Requests: []Latency{{}, {Failed: true}}}},
		"negative": {{Name: "n", Requests: []Latency{{At: -time.Second, Took: -time.Millisecond}}, Switches: []Switch{{Start: 2 * time.Second, End: time.Second}}}},
		"slow":     {{Name: "s", Requests: []Latency{{At: time.Second, Took: 30 * time.Second}}}},
	} {
		var b bytes.Buffer
		if err := SVG(&b, runs, 0, 0); err != nil {
			t.Fatal(name, err)
		}
		parseSVG(t, b.Bytes())
		if s := b.String(); strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
			t.Errorf("%s: SVG holds NaN/Inf:\n%s", name, s)
		}
	}
}

func TestSVGSize(t *testing.T) {
	// Two algorithms, 20 000 requests each over 400 s (50 requests/s), with
	// bursts of failures and slow requests around 10 switches.
	var runs []Run
	for a, name := range []string{"berth", "original"} {
		r := Run{Name: name}
		for i := range 20000 {
			at := time.Duration(i) * 20 * time.Millisecond
			took := time.Duration(2+i%7) * time.Millisecond
			in := i%2000 < 50
			if in {
				took *= time.Duration(50 * (a + 1))
			}
			r.Requests = append(r.Requests, Latency{At: at, Took: took, Failed: in && a == 1 && i%3 == 0})
		}
		for s := range 10 {
			start := time.Duration(s) * 40 * time.Second
			r.Switches = append(r.Switches, Switch{Start: start, End: start + time.Second})
		}
		runs = append(runs, r)
	}
	var b bytes.Buffer
	if err := SVG(&b, runs, 1000, 420); err != nil {
		t.Fatal(err)
	}
	if counts := parseSVG(t, b.Bytes()); counts["polyline"] != 2 {
		t.Errorf("want 2 polylines, got %v", counts)
	}
	if b.Len() >= 300<<10 {
		t.Errorf("SVG of 2×20 000 requests is %d bytes, want < 300 KB", b.Len())
	}
	t.Logf("SVG of 2×20 000 requests: %d bytes", b.Len())
}
