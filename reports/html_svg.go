package reports

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// Timeline geometry, in SVG user units. The SVG scales to the page width;
// these only fix proportions.
const (
	svgW    = 960.0
	labelW  = 236.0 // flow names, right-aligned against the plot
	plotW   = 704.0
	rowH    = 16.0
	barH    = 8.0
	topH    = 34.0 // room for the inject/recover labels
	axisH   = 22.0
	labelMx = 38 // characters of a flow name shown; the full name is in the title
)

// timeAxis maps seconds from load start to x for one scenario.
type timeAxis struct{ span float64 }

func (a timeAxis) x(sec float64) float64 {
	if a.span <= 0 {
		return labelW
	}
	return labelW + min(max(sec, 0), a.span)/a.span*plotW
}

// coord rounds a coordinate to one decimal: the page is ~40 % smaller than
// with full float precision and nothing is visibly different.
func coord(v float64) string { return num(v, 1) }

// bucketState is what a bucket shows: success, late answers only, some
// failures, all failed.
type bucketState int

const (
	bOK bucketState = iota
	bSlow
	bPartial
	bFailed
)

func stateOf(b measure.Bucket) bucketState {
	failed := 0
	for _, n := range b.Failed {
		failed += n
	}
	switch {
	case failed == 0 && b.Slow > 0:
		return bSlow
	case failed == 0:
		return bOK
	case b.OK > 0:
		return bPartial
	default:
		return bFailed
	}
}

// segment is a stretch of consecutive buckets in one state, in seconds.
type segment struct {
	from, to float64
	state    bucketState
	level    int // overview only: how many flows failed
}

// failureRuns run-length encodes a flow's timeline: one element per stretch
// of failing buckets instead of one per bucket, which is what keeps a
// 25-trial report small.
func failureRuns(tl []measure.Bucket, bucket time.Duration) []segment {
	var out []segment
	for _, b := range tl {
		st := stateOf(b)
		if st == bOK {
			continue
		}
		from := b.Offset.Seconds()
		to := (b.Offset + bucket).Seconds()
		if n := len(out); n > 0 && out[n-1].state == st && out[n-1].to >= from-1e-9 {
			out[n-1].to = to
			continue
		}
		out = append(out, segment{from: from, to: to, state: st})
	}
	return out
}

// timelineEnd is where a trial's timeline ends, in seconds from load start.
func timelineEnd(t *results.Trial, bucket time.Duration) float64 {
	if t.Window != nil {
		return t.Window.End.Sub(t.Window.Start).Seconds()
	}
	end := 0.0
	if t.Summary != nil {
		for _, f := range t.Summary.Flows {
			if n := len(f.Timeline); n > 0 {
				end = max(end, (f.Timeline[n-1].Offset + bucket).Seconds())
			}
		}
	}
	return end
}

// timeline is one trial's flows, one row each, on the scenario's axis.
func (p *page) timeline(g *scenarioGroup, tv *trialView) {
	t := tv.t
	fs := displayOrder(t.Summary.Flows)
	if len(fs) == 0 {
		p.s("<p class=\"nm\">not measured: the trial has no flows.</p>\n")
		return
	}
	span := g.span
	if span <= 0 {
		span = timelineEnd(t, p.bucket)
	}
	a := timeAxis{span: span}
	h := topH + float64(len(fs))*rowH + axisH
	tid := tv.id + "-tl"
	p.s("<figure class=\"tlf\"><svg class=\"tl\" viewBox=\"0 0 ", coord(svgW), " ", coord(h), "\" role=\"img\" aria-labelledby=\"", tid, "\">",
		"<title id=\"", tid, "\">Timeline of ", esc(tv.title), ": one row per flow, failures and outages over seconds from load start</title>\n")
	bottom := topH + float64(len(fs))*rowH
	if t.Window == nil {
		p.s("<text class=\"nm\" x=\"", coord(labelW), "\" y=\"12\">no load window recorded: fault times cannot be placed</text>\n")
	} else {
		for _, f := range t.Faults {
			x1 := a.x(since(t, f.Inject))
			x2 := a.x(span)
			if f.Recover != nil {
				x2 = a.x(since(t, *f.Recover))
			}
			p.s("<rect class=\"fp\" x=\"", coord(x1), "\" y=\"", coord(topH), "\" width=\"", coord(max(x2-x1, 0.5)), "\" height=\"", coord(bottom-topH), "\"/>\n")
		}
	}
	end := timelineEnd(t, p.bucket)
	for i, f := range fs {
		y := topH + float64(i)*rowH
		p.flowRow(a, f, y, end)
	}
	if t.Window != nil {
		p.markers(a, t, bottom, 0)
	}
	p.axis(a, bottom)
	p.s("</svg><figcaption>", esc(tv.title), ": ", strconv.Itoa(len(fs)), " flows; shaded: outage intervals by failure class; lines: fault injected (solid) and recovered (dashed).</figcaption></figure>\n")
}

func (p *page) flowRow(a timeAxis, f measure.FlowSummary, y, end float64) {
	id := f.Flow.ID
	failed := 0
	for _, n := range f.ByClass {
		failed += n
	}
	aff := ""
	if f.Affected {
		aff = " data-affected=\"1\""
	}
	p.s("<g class=\"fl\" data-flow=\"", esc(id), "\"", aff, "><title>", esc(id))
	if f.Flow.Control {
		p.s(" (control)")
	}
	p.s(": ", strconv.Itoa(f.Requests), " requests, ", strconv.Itoa(failed), " failed, ", strconv.Itoa(len(f.Outages)), " outage(s)")
	if f.DisruptionSeconds > 0 {
		p.s(", ", num(f.DisruptionSeconds, 3), " s disrupted")
	}
	p.s("</title>")
	label := id
	if f.Flow.Control {
		label = "control: " + label
	}
	if r := []rune(label); len(r) > labelMx {
		label = string(r[:labelMx-1]) + "…"
	}
	cy := y + (rowH-barH)/2
	p.s("<text class=\"lb\" x=\"", coord(labelW-6), "\" y=\"", coord(y+rowH-4), "\">", esc(label), "</text>")
	if len(f.Timeline) == 0 {
		p.s("<text class=\"nm\" x=\"", coord(labelW+4), "\" y=\"", coord(y+rowH-4), "\">not measured: no timeline</text></g>\n")
		return
	}
	x0 := a.x(f.Timeline[0].Offset.Seconds())
	p.s("<rect class=\"bg\" x=\"", coord(x0), "\" y=\"", coord(cy), "\" width=\"", coord(max(a.x(end)-x0, 0.5)), "\" height=\"", coord(barH), "\"/>")
	for _, r := range failureRuns(f.Timeline, p.bucket) {
		k := "rf"
		switch r.state {
		case bPartial:
			k = "rp"
		case bSlow:
			k = "rs"
		}
		x1, x2 := a.x(r.from), a.x(r.to)
		p.s("<rect class=\"", k, "\" x=\"", coord(x1), "\" y=\"", coord(cy), "\" width=\"", coord(max(x2-x1, 0.5)), "\" height=\"", coord(barH), "\"/>")
	}
	for _, o := range f.Outages {
		p.outage(a, o, y)
	}
	p.s("</g>\n")
}

// outage shades one outage interval in its dominant class's colour, with
// the class as text too (colour alone says nothing to some readers).
func (p *page) outage(a timeAxis, o measure.OutageInterval, y float64) {
	// Outage times are absolute; the axis is seconds from the trial's load
	// start.
	from, to := p.rel(o.Start), p.rel(o.End)
	x1, x2 := a.x(from), a.x(to)
	w := max(x2-x1, 1)
	k := outageClass(o.Class)
	p.s("<rect class=\"out c-", k, "\" data-class=\"", esc(string(o.Class)), "\" x=\"", coord(x1), "\" y=\"", coord(y+1), "\" width=\"", coord(w), "\" height=\"", coord(rowH-2), "\">",
		"<title>", esc(string(o.Class)), " outage +", num(from, 2), "–", num(to, 2), " s (", num(o.Seconds, 3), " s), ",
		strconv.Itoa(o.Failures), " failures: ", esc(byClass(o.ByClass)), "</title></rect>")
	if w >= 40 {
		p.s("<text class=\"ol\" x=\"", coord(x1+3), "\" y=\"", coord(y+rowH-4), "\">", esc(string(o.Class)), "</text>")
	}
}

// rel is seconds from the current trial's load start. The page renders
// one trial at a time, so the trial is kept on the page while it does.
func (p *page) rel(at time.Time) float64 {
	if p.cur == nil || p.cur.Window == nil {
		return 0
	}
	return at.Sub(p.cur.Window.Start).Seconds()
}

func outageClass(class events.Class) string {
	s := string(class)
	for _, k := range outageClasses {
		if s == k {
			return k
		}
	}
	return "other"
}

func byClass(m map[events.Class]int) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, string(k))
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		if n := m[events.Class(k)]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	return strings.Join(parts, ", ")
}

// markers draws each fault's inject (solid) and recover (dashed) line over
// the rows, labelled above the plot. rowTop>0 limits them to one row.
func (p *page) markers(a timeAxis, t *results.Trial, bottom, rowTop float64) {
	top := topH
	if rowTop > 0 {
		top = rowTop
	}
	for _, f := range t.Faults {
		xi := a.x(since(t, f.Inject))
		label := "inject " + f.Kind
		if f.Target != "" {
			label += " " + f.Target
		}
		p.s("<line class=\"mk in\" data-marker=\"inject\" x1=\"", coord(xi), "\" x2=\"", coord(xi), "\" y1=\"", coord(top-4), "\" y2=\"", coord(bottom), "\"><title>",
			esc(label), " at +", num(since(t, f.Inject), 3), " s</title></line>")
		if rowTop == 0 {
			p.s("<text class=\"ml\" x=\"", coord(xi+2), "\" y=\"11\">▼ ", esc(label), "</text>")
		}
		if f.Recover != nil {
			xr := a.x(since(t, *f.Recover))
			p.s("<line class=\"mk rc\" data-marker=\"recover\" x1=\"", coord(xr), "\" x2=\"", coord(xr), "\" y1=\"", coord(top-4), "\" y2=\"", coord(bottom), "\"><title>recover ",
				esc(f.Kind), " at +", num(since(t, *f.Recover), 3), " s</title></line>")
			if rowTop == 0 {
				p.s("<text class=\"ml\" x=\"", coord(xr+2), "\" y=\"25\">▼ recover</text>")
			}
		}
		p.s("\n")
	}
}

func (p *page) axis(a timeAxis, y float64) {
	step := 1.0
	switch {
	case a.span > 60:
		step = 10
	case a.span > 30:
		step = 5
	case a.span > 12:
		step = 2
	}
	p.s("<g class=\"ax\"><line x1=\"", coord(labelW), "\" x2=\"", coord(labelW+plotW), "\" y1=\"", coord(y+2), "\" y2=\"", coord(y+2), "\"/>")
	for s := 0.0; s <= a.span+1e-9; s += step {
		x := a.x(s)
		p.s("<line x1=\"", coord(x), "\" x2=\"", coord(x), "\" y1=\"", coord(y+2), "\" y2=\"", coord(y+6), "\"/><text x=\"", coord(x), "\" y=\"", coord(y+17), "\">", num(s, 0), "</text>")
	}
	p.s("<text class=\"au\" x=\"", coord(labelW-16), "\" y=\"", coord(y+17), "\">s from load start</text></g>\n")
}

// overview is the scenario's modes on one axis: one row per trial, shaded
// where flows failed, darker the more flows failed in that bucket.
func (p *page) overview(g *scenarioGroup, modes []string) {
	var rows []*trialView
	for _, m := range modes {
		rows = append(rows, g.trials[m]...)
	}
	if len(rows) == 0 {
		p.s("<p class=\"nm\">not measured: no trial of this scenario ran.</p>\n")
		return
	}
	a := timeAxis{span: g.span}
	if a.span <= 0 {
		for _, tv := range rows {
			a.span = max(a.span, timelineEnd(tv.t, p.bucket))
		}
	}
	rh := 20.0
	h := topH + float64(len(rows))*rh + axisH
	oid := g.id + "-ov"
	p.s("<figure class=\"tlf ov\"><svg class=\"tl\" viewBox=\"0 0 ", coord(svgW), " ", coord(h), "\" role=\"img\" aria-labelledby=\"", oid, "\">",
		"<title id=\"", oid, "\">", esc(g.name), " in every mode on one time axis: flows failing per bucket</title>\n")
	p.s("<text class=\"ml\" x=\"", coord(labelW), "\" y=\"14\">flows failing or in an outage per ", esc(fmtDur(p.bucket)), " (darker: more flows); lines: fault injected / recovered</text>\n")
	for i, tv := range rows {
		t := tv.t
		p.cur = t
		y := topH + float64(i)*rh
		label := t.Mode
		if len(g.trials[t.Mode]) > 1 {
			label += " · trial " + strconv.Itoa(t.Index)
		}
		p.s("<g class=\"ovr\" data-mode=\"", esc(t.Mode), "\"><a href=\"#", tv.id, "\"><text class=\"lb\" x=\"", coord(labelW-6), "\" y=\"", coord(y+rh-6), "\">", esc(label), "</text></a>")
		if t.Summary == nil {
			p.s("<text class=\"nm\" x=\"", coord(labelW+4), "\" y=\"", coord(y+rh-6), "\">not measured: ", esc(dashIf(t.Status)), "</text></g>\n")
			continue
		}
		total := 0
		for _, f := range t.Summary.Flows {
			if !f.Flow.Control {
				total++
			}
		}
		end := timelineEnd(t, p.bucket)
		p.s("<rect class=\"bg\" x=\"", coord(labelW), "\" y=\"", coord(y+4), "\" width=\"", coord(max(a.x(end)-labelW, 0.5)), "\" height=\"", coord(rh-8), "\"/>")
		for _, r := range failingFlows(t, p.bucket) {
			lvl := (r.level*4 + total - 1) / max(total, 1)
			x1, x2 := a.x(r.from), a.x(r.to)
			p.s("<rect class=\"h", strconv.Itoa(min(max(lvl, 1), 4)), "\" x=\"", coord(x1), "\" y=\"", coord(y+4), "\" width=\"", coord(max(x2-x1, 0.5)), "\" height=\"", coord(rh-8), "\"><title>",
				strconv.Itoa(r.level), " of ", strconv.Itoa(total), " flows failing, +", num(r.from, 1), "–", num(r.to, 1), " s</title></rect>")
		}
		if t.Window != nil {
			p.markers(a, t, y+rh, y+4)
		}
		p.s("</g>\n")
	}
	p.cur = nil
	p.axis(a, topH+float64(len(rows))*rh)
	p.s("</svg><figcaption>", esc(g.name), ": modes aligned on seconds from load start; each row links to its trial.</figcaption></figure>\n")
}

// failingFlows counts, per bucket, the non-control flows that failed in it
// or were in an outage (which also covers requests that never happened),
// and run-length encodes the counts.
func failingFlows(t *results.Trial, bucket time.Duration) []segment {
	count := map[int64]int{}
	for _, f := range t.Summary.Flows {
		if f.Flow.Control {
			continue
		}
		hit := map[int64]bool{}
		for _, b := range f.Timeline {
			if stateOf(b) != bOK {
				hit[int64(b.Offset/bucket)] = true
			}
		}
		if t.Window != nil {
			for _, o := range f.Outages {
				from := int64(o.Start.Sub(t.Window.Start) / bucket)
				to := int64((o.End.Sub(t.Window.Start) + bucket - 1) / bucket)
				for i := max(from, 0); i < to; i++ {
					hit[i] = true
				}
			}
		}
		for i := range hit {
			count[i]++
		}
	}
	idx := make([]int64, 0, len(count))
	for i := range count {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	var out []segment
	bs := bucket.Seconds()
	for _, i := range idx {
		from, to := float64(i)*bs, float64(i+1)*bs
		if n := len(out); n > 0 && out[n-1].level == count[i] && out[n-1].to >= from-1e-9 {
			out[n-1].to = to
			continue
		}
		out = append(out, segment{from: from, to: to, level: count[i]})
	}
	return out
}

// css is shared by every element: classes, not per-element styles, keep
// each SVG element a few dozen bytes. Colours are paired with text labels
// and titles everywhere. content-visibility lets the browser skip laying
// out trials far below the fold: a third off the load time of the full
// matrix's report.
const css = `
:root{--ok:#cfe8cf;--fail:#c0392b;--part:#f0a58f;--fp:#fff3c4;--ink:#1d2330;--mute:#5b6475;--line:#d5d9e0}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0;background:#fff}
header,main,nav{max-width:1180px;margin:0 auto;padding:0 16px}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid var(--line)}h3{font-size:15px;margin:18px 0 6px}
nav ul{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:4px 12px;font-size:13px}
code{font:12px ui-monospace,Menlo,Consolas,monospace}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
thead th{background:#f2f4f7}
small{color:var(--mute)}
.warn{background:#fff3c4;border-left:4px solid #e0a800;padding:6px 10px}
.err{color:#9b1c1c}
.nm{color:#8a5a00;font-style:italic}
.na{color:var(--mute)}
.vb{font-weight:600;padding:0 4px;border-radius:3px;border:1px solid currentColor}
.v-no-impact,.v-no-data-plane-impact{color:#1e6b34}.v-contained{color:#8a5a00}.v-cluster-wide{color:#9b1c1c}
.st{font-size:12px;font-weight:600;text-transform:uppercase;padding:0 4px;border:1px solid currentColor;border-radius:3px}
.st-done{color:#1e6b34}.st-failed,.st-error{color:#9b1c1c}.st-running,.st-interrupted{color:#8a5a00}
.flag{font-weight:700;color:#8a5a00}
.expect{list-style:none;padding:0}.expect .pass strong{color:#1e6b34}.expect .fail strong{color:#9b1c1c}.expect .differs strong{color:#8a5a00}
.env{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}.env dt{color:var(--mute)}.env dd{margin:0}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 16px}.legend svg{vertical-align:middle}
.trial{border-top:1px solid var(--line);content-visibility:auto;contain-intrinsic-size:auto 1200px}
.tlf{margin:8px 0}.tl{width:100%;height:auto;display:block;font:10px ui-monospace,Menlo,Consolas,monospace}
figcaption{font-size:12px;color:var(--mute)}
.lb{text-anchor:end;fill:var(--ink)}.ax .au{text-anchor:end;fill:var(--mute)}
.bg{fill:var(--ok)}.rf{fill:var(--fail)}.rp{fill:var(--part)}.rs{fill:#e0b000}.fp{fill:var(--fp)}
.mk{stroke-width:1.5}.mk.in{stroke:#111}.mk.rc{stroke:#111;stroke-dasharray:4 3}
.ml{fill:var(--ink)}
.out{fill-opacity:.45;stroke-width:1}.ol{fill:#111;font-size:9px;pointer-events:none}
.c-timeout{fill:#d62728;stroke:#d62728}.c-refused{fill:#ff7f0e;stroke:#ff7f0e}.c-reset{fill:#9467bd;stroke:#9467bd}
.c-unreachable{fill:#8c564b;stroke:#8c564b}.c-http{fill:#e377c2;stroke:#e377c2}.c-other{fill:#7f7f7f;stroke:#7f7f7f}.c-missing{fill:#17becf;stroke:#17becf}.c-slow{fill:#e0b000;stroke:#b08a00}
.ax line{stroke:var(--mute)}.ax text{fill:var(--mute);text-anchor:middle}
.h1{fill:#f5b7a8}.h2{fill:#e8806a}.h3{fill:#d24d35}.h4{fill:#9b1c1c}
.radius td{text-align:center;min-width:48px}.r0{background:#e8f5e9}.r1{background:#fde0d6}.r2{background:#f8b3a0}.r3{background:#ef7a5e;color:#fff}.r4{background:#b3261e;color:#fff}
.fn{color:#9b1c1c;font-size:11px}
details.flows summary{cursor:pointer;color:#2b4c8c}
.flowtab td,.flowtab th{font-size:12px}
`
