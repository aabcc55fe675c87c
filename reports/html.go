package reports

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// HTMLOptions tunes HTML.
type HTMLOptions struct {
	// Dir is the run folder. When set, every flow's event file is looked
	// for, so a folder that lost some is marked; empty skips the check.
	Dir string
	// Generated is printed as the report's creation time when non-zero.
	// It is an option, not time.Now, so that golden tests stay byte-stable.
	Generated time.Time
}

// modeOrder is the column order of every mode comparison: the baseline
// first, then the per-pod proxy, then the per-node proxy; the reference
// data plane's, then Istio's.
var modeOrder = []string{"none", "sidecar", "ambient", "istio-sidecar", "istio-ambient"}

// HTML writes the run as one self-contained HTML page: verdict table,
// environment, then per scenario the mode comparison, multi-trial
// statistics and every trial's timelines, latency, expectations, verdict
// and blast-radius matrix. Charts are inline SVG; the page loads nothing
// and needs no script. The output depends only on run, the event files'
// presence and opt, never on map order or the clock.
func HTML(w io.Writer, run *results.Run, opt HTMLOptions) error {
	p := &page{run: run, opt: opt, ids: map[string]int{}}
	p.group()
	p.write()
	_, err := w.Write(p.b.Bytes())
	return err
}

type page struct {
	b   bytes.Buffer
	run *results.Run
	opt HTMLOptions
	ids map[string]int

	scenarios []*scenarioGroup
	modes     []string
	// bucket is the run's timeline resolution.
	bucket time.Duration
	// cur is the trial being drawn: outage times are placed relative to
	// its load window.
	cur *results.Trial
}

// scenarioGroup is one scenario (fault) across every mode it ran in.
type scenarioGroup struct {
	name   string
	fault  string
	id     string
	cells  map[string]*results.MatrixCell // by mode
	trials map[string][]*trialView        // by mode, in run order
	// span is the longest load window of the group in seconds: every
	// timeline of the scenario uses it so modes align on one axis.
	span float64
}

// trialView is a trial with the ids and derived figures the page needs.
type trialView struct {
	t     *results.Trial
	id    string
	title string
}

func (p *page) printf(format string, a ...any) { fmt.Fprintf(&p.b, format, a...) }
func (p *page) s(parts ...string) {
	for _, s := range parts {
		p.b.WriteString(s)
	}
}

// uid turns s into a unique, attribute-safe element id.
func (p *page) uid(prefix, s string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	id := b.String()
	p.ids[id]++
	if n := p.ids[id]; n > 1 {
		id += "-" + strconv.Itoa(n)
	}
	return id
}

// group collects trials and matrix cells per scenario, in the order the
// run first mentions them, and the modes in canonical order.
func (p *page) group() {
	p.bucket = time.Duration(p.run.Environment.BucketMs * float64(time.Millisecond))
	if p.bucket <= 0 {
		p.bucket = measure.DefaultBucket
	}
	byName := map[string]*scenarioGroup{}
	get := func(name, fault string) *scenarioGroup {
		g := byName[name]
		if g == nil {
			g = &scenarioGroup{name: name, fault: fault, id: p.uid("sc-", name),
				cells: map[string]*results.MatrixCell{}, trials: map[string][]*trialView{}}
			byName[name] = g
			p.scenarios = append(p.scenarios, g)
		}
		if g.fault == "" {
			g.fault = fault
		}
		return g
	}
	seenMode := map[string]bool{}
	for i := range p.run.Matrix {
		c := &p.run.Matrix[i]
		get(c.Scenario, c.Fault).cells[c.Mode] = c
		seenMode[c.Mode] = true
	}
	for _, t := range p.run.Trials {
		if t == nil {
			continue
		}
		g := get(t.Scenario, t.Fault)
		seenMode[t.Mode] = true
		if t.Status == results.StatusSkipped {
			continue // shown as n/a with its reason, not as a trial
		}
		key := t.Dir
		if key == "" {
			key = fmt.Sprintf("%s-%s-%d", t.Scenario, t.Mode, t.Index)
		}
		tv := &trialView{t: t, id: p.uid("t-", key), title: trialTitle(t)}
		g.trials[t.Mode] = append(g.trials[t.Mode], tv)
		if t.Window != nil {
			g.span = max(g.span, t.Window.End.Sub(t.Window.Start).Seconds())
		}
	}
	for _, m := range modeOrder {
		if seenMode[m] {
			p.modes = append(p.modes, m)
			delete(seenMode, m)
		}
	}
	var rest []string
	for m := range seenMode {
		rest = append(rest, m)
	}
	sort.Strings(rest)
	p.modes = append(p.modes, rest...)
}

func trialTitle(t *results.Trial) string {
	s := t.Scenario
	if t.Mode != "" {
		s += " · " + t.Mode
	}
	if t.Index > 0 {
		s += " · trial " + strconv.Itoa(t.Index)
	}
	return s
}

// modesOf is the modes a scenario has a cell or a trial in, in page order.
func (p *page) modesOf(g *scenarioGroup) []string {
	var ms []string
	for _, m := range p.modes {
		if g.cells[m] != nil || len(g.trials[m]) > 0 {
			ms = append(ms, m)
		}
	}
	return ms
}

func (p *page) write() {
	r := p.run
	title := "blastradius report " + r.ID
	p.s("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
		"<title>", esc(title), "</title>\n<style>", css, "</style>\n</head>\n<body>\n")
	p.s("<header><h1>", esc(title), "</h1>\n")
	p.status()
	p.s("</header>\n<nav aria-label=\"contents\"><ul><li><a href=\"#summary\">Verdicts</a></li><li><a href=\"#environment\">Environment</a></li>")
	for _, g := range p.scenarios {
		p.s("<li><a href=\"#", g.id, "\">", esc(g.name), "</a></li>")
	}
	p.s("</ul></nav>\n<main>\n")
	p.answer()
	p.summary()
	p.environment()
	p.legend()
	for _, g := range p.scenarios {
		p.scenario(g)
	}
	p.s("</main>\n")
	if !p.opt.Generated.IsZero() {
		p.s("<footer>generated ", esc(p.opt.Generated.UTC().Format(time.RFC3339)), "</footer>\n")
	}
	p.s("</body>\n</html>\n")
}

// status is the run's state; an unfinished run says so first, since every
// figure below then covers only part of what was planned.
func (p *page) status() {
	r := p.run
	counts := map[string]int{}
	for _, t := range r.Trials {
		if t != nil {
			counts[t.Status]++
		}
	}
	var parts []string
	for _, s := range sortedKeys(counts) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
	}
	p.s("<p class=\"runstatus\">status <strong class=\"st st-", cls(r.Status), "\">", esc(dashIf(r.Status)), "</strong>")
	if !r.Started.IsZero() {
		p.s(" · started ", esc(r.Started.UTC().Format(time.RFC3339)))
	}
	if r.Finished != nil {
		p.s(" · finished ", esc(r.Finished.UTC().Format(time.RFC3339)),
			" (", esc(fmtDur(r.Finished.Sub(r.Started))), ")")
	}
	p.s(" · trials: ", esc(dashIf(strings.Join(parts, ", "))), "</p>\n")
	if len(r.Command) > 0 {
		p.s("<p class=\"cmd\"><code>blastradius ", esc(strings.Join(r.Command, " ")), "</code></p>\n")
	}
	switch r.Status {
	case results.StatusRunning, results.StatusInterrupted:
		p.s("<p class=\"warn partial\" role=\"note\">Incomplete run (status ", esc(r.Status),
			"): the run stopped before it finished. Everything below covers what was measured up to then; ",
			"missing pieces are marked “not measured”.</p>\n")
	case results.StatusError:
		p.s("<p class=\"warn\" role=\"note\">The run ended with an error: some trials could not be carried out (marked below).</p>\n")
	}
}

func (p *page) summary() {
	r := p.run
	p.s("<section id=\"summary\"><h2>Verdicts</h2>\n")
	if len(r.Matrix) == 0 {
		p.s("<p class=\"nm\">not measured: no verdict matrix in run.json (the run stopped before any trial finished).</p>\n")
	} else {
		multi := false
		for _, c := range r.Matrix {
			multi = multi || c.Trials > 1
		}
		p.s("<table class=\"verdicts\"><caption>Fault × data plane mode: affected flows / total, disruption-seconds (late answers included), failed and slow requests, broken and stalled streams, verdict")
		if multi {
			p.s(" (several trials: mean [95 % CI], p95 and worst)")
		}
		p.s("</caption>\n<thead><tr><th scope=\"col\">fault</th>")
		for _, m := range p.modes {
			p.s("<th scope=\"col\">", esc(m), "</th>")
		}
		p.s("</tr></thead>\n<tbody>\n")
		for _, g := range p.scenarios {
			if len(g.cells) == 0 {
				continue
			}
			p.s("<tr><th scope=\"row\"><a href=\"#", g.id, "\">", esc(g.name), "</a>")
			if g.fault != "" && g.fault != g.name {
				p.s(" <small>(", esc(g.fault), ")</small>")
			}
			p.s("</th>")
			for _, m := range p.modes {
				p.cell(g, m)
			}
			p.s("</tr>\n")
		}
		p.s("</tbody></table>\n")
	}
	p.noisy()
	p.s("</section>\n")
}

// cell is one fault × mode cell of the verdict table.
func (p *page) cell(g *scenarioGroup, mode string) {
	c := g.cells[mode]
	switch {
	case c == nil:
		p.s("<td class=\"nm\">not measured</td>")
		return
	case c.Trials == 0 && c.Skipped != "":
		p.s("<td class=\"na\" title=\"", esc(c.Skipped), "\">n/a <small>", esc(c.Skipped), "</small></td>")
		return
	case c.Trials == 0:
		p.s("<td class=\"err\">error: ", strconv.Itoa(c.Errors), " trial(s) could not run</td>")
		return
	}
	p.s("<td class=\"v-", cls(c.Verdict), "\">")
	p.verdictBadge(c.Verdict)
	if len(c.Verdicts) > 1 {
		var parts []string
		for _, v := range sortedKeys(c.Verdicts) {
			parts = append(parts, fmt.Sprintf("%s×%d", v, c.Verdicts[v]))
		}
		p.s(" <small>(", esc(strings.Join(parts, ", ")), ")</small>")
	}
	p.s("<br>", stat(c.Affected, 1, c.Trials > 1), "/", strconv.Itoa(c.Total), " flows · ",
		stat(c.DisruptionSeconds, 2, c.Trials > 1), " s · ",
		stat(c.FailedRequests, 0, c.Trials > 1), " failed · ",
		stat(c.SlowRequests, 0, c.Trials > 1), " slow · ",
		stat(c.BrokenStreams, 0, c.Trials > 1), " broken · ",
		stat(c.StalledStreams, 0, c.Trials > 1), " stalled")
	var notes []string
	if c.Trials > 1 {
		notes = append(notes, fmt.Sprintf("%d trials", c.Trials))
	}
	notes = append(notes, cellNotes(*c)...)
	if len(notes) > 0 {
		p.s("<br><small>", esc(strings.Join(notes, "; ")), "</small>")
	}
	p.s("</td>")
}

// stat prints one figure: the value for one trial, mean [CI] p95 for more.
func stat(s results.Stats, prec int, multi bool) string {
	if !multi {
		return num(s.Mean, prec)
	}
	return fmt.Sprintf("%s [%s, %s] p95 %s worst %s", num(s.Mean, max(prec, 1)), num(s.CILow, max(prec, 1)), num(s.CIHigh, max(prec, 1)), num(s.P95, prec), num(s.Max, prec))
}

func (p *page) verdictBadge(v string) {
	if v == "" {
		p.s("<span class=\"vb\">no verdict</span>")
		return
	}
	p.s("<span class=\"vb v-", cls(v), "\">", esc(v), "</span>")
}

// noisy lists every trial whose control flow or CPU says the result may not
// be the fault's doing.
func (p *page) noisy() {
	var rows []*trialView
	for _, g := range p.scenarios {
		for _, m := range p.modesOf(g) {
			for _, tv := range g.trials[m] {
				if tv.t.Noisy {
					rows = append(rows, tv)
				}
			}
		}
	}
	p.s("<h3>Noisy trials</h3>\n")
	if len(rows) == 0 {
		p.s("<p>none: no control flow was disrupted and the CPU was not saturated.</p>\n")
		return
	}
	p.s("<ul class=\"noisy\">\n")
	for _, tv := range rows {
		p.s("<li><span class=\"flag\">NOISY</span> <a href=\"#", tv.id, "\">", esc(tv.title), "</a>: ",
			esc(strings.Join(tv.t.NoisyReasons, "; ")), "</li>\n")
	}
	p.s("</ul>\n")
}

func (p *page) environment() {
	e := p.run.Environment
	p.s("<section id=\"environment\"><h2>Environment</h2>\n<dl class=\"env\">")
	kv := func(k, v string) { p.s("<dt>", esc(k), "</dt><dd>", esc(dashIf(v)), "</dd>") }
	kv("provider", e.Provider)
	kv("modes", e.Mode)
	kv("data plane", e.DataPlane)
	kv("version", e.Version)
	kv("kernel", e.Kernel)
	cpu := e.CPUModel
	if e.CPUs > 0 {
		cpu = fmt.Sprintf("%d × %s", e.CPUs, dashIf(e.CPUModel))
	}
	kv("CPU", cpu)
	kv("Go", e.GoVersion)
	kv("rootless", strconv.FormatBool(e.Rootless))
	kv("timeline bucket", fmtDur(p.bucket))
	if e.BudgetRPS > 0 {
		kv("request budget", num(e.BudgetRPS, 0)+" rps")
	} else {
		kv("request budget", "auto: 200 rps per flow, at most 300 per CPU (each flow's rate is in its row)")
	}
	kv("not-ready grace", e.NotReadyGrace)
	for _, im := range e.Images {
		v := im.Ref
		if im.ID != "" {
			v += " (" + im.ID + ")"
		}
		if im.StandIn {
			v += ", the tool's stand-in"
		}
		kv("image: "+im.Role, v)
	}
	p.s("</dl></section>\n")
}

// outageClasses is the legend order: measured classes, then late answers
// and missing.
var outageClasses = []string{"timeout", "refused", "reset", "unreachable", "http", "other", "slow", "missing"}

func (p *page) legend() {
	p.s("<section id=\"legend\" aria-label=\"legend\"><h2>How to read the timelines</h2>\n<ul class=\"legend\">",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><rect class=\"bg\" width=\"24\" height=\"12\"/></svg> requests succeeded</li>",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><rect class=\"rf\" width=\"24\" height=\"12\"/></svg> every request of the bucket failed</li>",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><rect class=\"rp\" width=\"24\" height=\"12\"/></svg> some requests failed</li>",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><rect class=\"rs\" width=\"24\" height=\"12\"/></svg> none failed, some answered late (above the flow's stall threshold)</li>",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><rect class=\"fp\" width=\"24\" height=\"12\"/></svg> fault period</li>",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><line class=\"mk in\" x1=\"12\" x2=\"12\" y1=\"0\" y2=\"12\"/></svg> fault injected</li>",
		"<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><line class=\"mk rc\" x1=\"12\" x2=\"12\" y1=\"0\" y2=\"12\"/></svg> fault recovered</li>",
		"</ul>\n<p>Outage intervals are shaded by their dominant failure class and labelled with it:</p>\n<ul class=\"legend\">")
	for _, c := range outageClasses {
		p.s("<li><svg width=\"24\" height=\"12\" aria-hidden=\"true\"><rect class=\"out c-", c, "\" width=\"24\" height=\"12\"/></svg> ", c, "</li>")
	}
	p.s("</ul>\n<p>Time is seconds from the start of load; every timeline of one scenario uses the same axis, so modes line up.</p></section>\n")
}

func (p *page) scenario(g *scenarioGroup) {
	modes := p.modesOf(g)
	p.s("<section class=\"scenario\" id=\"", g.id, "\"><h2>", esc(g.name))
	if g.fault != "" && g.fault != g.name {
		p.s(" <small>(fault ", esc(g.fault), ")</small>")
	}
	p.s("</h2>\n")
	for _, m := range modes {
		if ts := g.trials[m]; len(ts) > 0 && ts[0].t.Description != "" {
			p.s("<p class=\"desc\">", esc(ts[0].t.Description), "</p>\n")
			break
		}
	}
	p.compare(g, modes)
	p.overview(g, modes)
	p.multiStats(g, modes)
	for _, m := range modes {
		for _, tv := range g.trials[m] {
			p.trial(g, tv)
		}
	}
	p.s("</section>\n")
}

// compare puts the same figures of every mode side by side.
func (p *page) compare(g *scenarioGroup, modes []string) {
	p.s("<table class=\"compare\"><caption>", esc(g.name), " by mode</caption>\n<thead><tr><th scope=\"col\">figure</th>")
	for _, m := range modes {
		p.s("<th scope=\"col\">", esc(m), "</th>")
	}
	p.s("</tr></thead>\n<tbody>\n")
	row := func(name string, f func(c *results.MatrixCell) string) {
		p.s("<tr><th scope=\"row\">", name, "</th>")
		for _, m := range modes {
			c := g.cells[m]
			switch {
			case c == nil && len(g.trials[m]) > 0:
				p.s("<td class=\"nm\">not measured: no verdict yet</td>")
			case c == nil:
				p.s("<td class=\"nm\">not measured</td>")
			case c.Trials == 0 && c.Skipped != "":
				p.s("<td class=\"na\">n/a</td>")
			case c.Trials == 0:
				p.s("<td class=\"err\">error</td>")
			default:
				p.s("<td>", f(c), "</td>")
			}
		}
		p.s("</tr>\n")
	}
	p.s("<tr><th scope=\"row\">verdict</th>")
	for _, m := range modes {
		c := g.cells[m]
		switch {
		case c == nil:
			p.s("<td class=\"nm\">not measured</td>")
		case c.Trials == 0 && c.Skipped != "":
			p.s("<td class=\"na\">n/a: ", esc(c.Skipped), "</td>")
		case c.Trials == 0:
			p.s("<td class=\"err\">error: ", strconv.Itoa(c.Errors), " trial(s) could not run</td>")
		default:
			p.s("<td>")
			p.verdictBadge(c.Verdict)
			p.s("</td>")
		}
	}
	p.s("</tr>\n")
	row("trials", func(c *results.MatrixCell) string { return strconv.Itoa(c.Trials) })
	row("affected flows", func(c *results.MatrixCell) string {
		return stat(c.Affected, 1, c.Trials > 1) + " / " + strconv.Itoa(c.Total)
	})
	row("disruption-seconds", func(c *results.MatrixCell) string { return stat(c.DisruptionSeconds, 2, c.Trials > 1) })
	row("of failed requests only", func(c *results.MatrixCell) string { return stat(c.FailedDisruptionSeconds, 2, c.Trials > 1) })
	row("failed requests", func(c *results.MatrixCell) string { return stat(c.FailedRequests, 0, c.Trials > 1) })
	row("slow requests", func(c *results.MatrixCell) string { return stat(c.SlowRequests, 0, c.Trials > 1) })
	row("broken streams", func(c *results.MatrixCell) string { return stat(c.BrokenStreams, 0, c.Trials > 1) })
	row("stalled streams", func(c *results.MatrixCell) string { return stat(c.StalledStreams, 0, c.Trials > 1) })
	row("expectation failures", func(c *results.MatrixCell) string { return strconv.Itoa(c.Failed) })
	row("noisy trials", func(c *results.MatrixCell) string { return strconv.Itoa(c.Noisy) })
	p.s("</tbody></table>\n")
}

// multiStats is shown when some mode ran the scenario more than once.
func (p *page) multiStats(g *scenarioGroup, modes []string) {
	multi := false
	for _, m := range modes {
		if c := g.cells[m]; c != nil && c.Trials > 1 {
			multi = true
		}
	}
	if !multi {
		return
	}
	p.s("<table class=\"stats\"><caption>", esc(g.name), " over several trials: mean, 95 % confidence interval of the mean, p95, worst trial</caption>\n",
		"<thead><tr><th scope=\"col\">mode</th><th scope=\"col\">trials</th><th scope=\"col\">verdicts</th>",
		"<th scope=\"col\">affected flows</th><th scope=\"col\">disruption-seconds</th><th scope=\"col\">failed requests</th><th scope=\"col\">slow requests</th><th scope=\"col\">broken streams</th><th scope=\"col\">stalled streams</th></tr></thead>\n<tbody>\n")
	for _, m := range modes {
		c := g.cells[m]
		if c == nil || c.Trials == 0 {
			continue
		}
		var vs []string
		for _, v := range sortedKeys(c.Verdicts) {
			vs = append(vs, fmt.Sprintf("%s×%d", v, c.Verdicts[v]))
		}
		p.s("<tr><th scope=\"row\">", esc(m), "</th><td>", strconv.Itoa(c.Trials), "</td><td>", esc(strings.Join(vs, ", ")), "</td>")
		for _, s := range []results.Stats{c.Affected, c.DisruptionSeconds, c.FailedRequests, c.SlowRequests, c.BrokenStreams, c.StalledStreams} {
			p.s("<td>", stat(s, 2, true), "</td>")
		}
		p.s("</tr>\n")
	}
	p.s("</tbody></table>\n")
}

func (p *page) trial(g *scenarioGroup, tv *trialView) {
	t := tv.t
	p.cur = t
	defer func() { p.cur = nil }()
	p.s("<section class=\"trial\" id=\"", tv.id, "\" data-mode=\"", esc(t.Mode), "\"><h3>", esc(tv.title),
		" <span class=\"st st-", cls(t.Status), "\">", esc(dashIf(t.Status)), "</span></h3>\n")
	if t.Error != "" {
		p.s("<p class=\"err\">error: ", esc(t.Error), "</p>\n")
	}
	p.s("<p class=\"meta\">", strconv.Itoa(len(t.Topology.Nodes)), " nodes · ", strconv.Itoa(len(t.Flows)), " flows · bring-up ",
		num(t.BringUpSeconds, 2), " s")
	if t.SetupSeconds > 0 {
		p.s(" · load after ", num(t.SetupSeconds, 2), " s")
	}
	if t.CPU != nil {
		p.s(" · CPU mean ", num(t.CPU.Mean*100, 0), " %, max ", num(t.CPU.Max*100, 0), " %")
	}
	if t.Dir != "" {
		p.s(" · folder <code>", esc(t.Dir), "</code>")
	}
	p.s("</p>\n")
	p.faults(t)
	missing := p.missingEvents(t)
	if t.Summary == nil {
		p.notMeasured(t, missing)
		p.expectations(t)
		p.s("</section>\n")
		return
	}
	p.verdict(t)
	p.expectations(t)
	if t.Noisy {
		p.s("<p class=\"warn\"><span class=\"flag\">NOISY</span> ", esc(strings.Join(t.NoisyReasons, "; ")), "</p>\n")
	}
	p.timeline(g, tv)
	p.latency(t)
	p.radiusMatrix(t)
	p.flowTable(t, missing)
	p.s("</section>\n")
}

func (p *page) faults(t *results.Trial) {
	if len(t.Faults) == 0 {
		return
	}
	p.s("<ul class=\"faults\">")
	for _, f := range t.Faults {
		p.s("<li>fault <strong>", esc(f.Kind), "</strong> on ", esc(dashIf(f.Target)), " injected at +", num(since(t, f.Inject), 3), " s")
		if f.Recover != nil {
			p.s(", recovered at +", num(since(t, *f.Recover), 3), " s (", num(f.Recover.Sub(f.Inject).Seconds(), 3), " s)")
		} else {
			p.s(", not recovered before load ended")
		}
		if f.Detail != "" {
			p.s(": ", esc(f.Detail))
		}
		p.s("</li>")
	}
	p.s("</ul>\n")
}

// notMeasured explains a trial without a summary, from its status.
func (p *page) notMeasured(t *results.Trial, missing map[string]bool) {
	why := "the trial has no measurement"
	switch t.Status {
	case results.StatusRunning, results.StatusInterrupted:
		why = "the run stopped during this trial"
	case results.StatusError:
		why = "the trial could not complete"
	}
	p.s("<p class=\"nm\" data-missing=\"summary\">not measured: ", why, ".")
	if len(t.Flows) > 0 && p.opt.Dir != "" {
		have := len(t.Flows) - len(missing)
		p.s(" ", strconv.Itoa(have), " of ", strconv.Itoa(len(t.Flows)), " flow event files were recorded")
		if have > 0 {
			p.s(" (raw events are kept in the folder but were not analysed)")
		}
		p.s(".")
	}
	p.s("</p>\n")
	if len(missing) > 0 {
		p.s("<p class=\"nm\" data-missing=\"events\">no event file: ", esc(strings.Join(sortedKeys(missing), ", ")), "</p>\n")
	}
}

// missingEvents is the set of flows whose event file is not in the folder.
func (p *page) missingEvents(t *results.Trial) map[string]bool {
	if p.opt.Dir == "" {
		return nil
	}
	var m map[string]bool
	for _, f := range t.Flows {
		if f.Events == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(p.opt.Dir, filepath.FromSlash(f.Events))); err != nil {
			if m == nil {
				m = map[string]bool{}
			}
			m[f.ID] = true
		}
	}
	return m
}

func (p *page) verdict(t *results.Trial) {
	v := t.Verdict
	if v == nil {
		if len(t.Faults) > 0 {
			p.s("<p class=\"nm\">not measured: no verdict recorded for this trial.</p>\n")
		}
		return
	}
	p.s("<div class=\"verdict\"><p>verdict ")
	p.verdictBadge(v.Value)
	p.s(" · fault nodes ", esc(dashIf(strings.Join(v.FaultNodes, ", "))),
		" · ", strconv.Itoa(v.Affected), "/", strconv.Itoa(v.Total), " flows affected · ",
		num(v.DisruptionSeconds, 3), " disruption-seconds (", num(v.FailedDisruptionSeconds, 3), " of failed requests alone) · ",
		strconv.Itoa(v.FailedRequests), " failed requests · ", strconv.Itoa(v.SlowRequests), " slow requests · ",
		strconv.Itoa(v.BrokenStreams), " broken streams · ", strconv.Itoa(v.StalledStreams), " stalled streams</p>\n")
	if len(v.Beyond) > 0 {
		p.s("<p class=\"beyond\">affected beyond the fault nodes (", strconv.Itoa(len(v.Beyond)), "): ", esc(strings.Join(v.Beyond, ", ")), "</p>\n")
	}
	if len(v.Isolated) > 0 {
		p.s("<p class=\"isolated\">isolated single failures, not counted (", strconv.Itoa(len(v.Isolated)), "): ", esc(strings.Join(v.Isolated, ", ")), "</p>\n")
	}
	p.s("</div>\n")
}

func (p *page) expectations(t *results.Trial) {
	if len(t.Expectations) == 0 {
		return
	}
	p.s("<ul class=\"expect\">")
	for _, e := range t.Expectations {
		switch {
		case e.Pass:
			p.s("<li class=\"pass\"><strong>PASS</strong> ", esc(e.Name))
		case e.Informational:
			p.s("<li class=\"differs\"><strong>DIFFERS</strong> (the reference's design, not required of this mesh) ", esc(e.Name))
		default:
			p.s("<li class=\"fail\"><strong>FAIL</strong> ", esc(e.Name))
		}
		if e.Detail != "" {
			p.s(": ", esc(e.Detail))
		}
		p.s("</li>")
	}
	p.s("</ul>\n")
}

// radiusMatrix is client node × server node: affected flows over the flows
// of the pair. The control flow is left out: it is the yardstick, not a
// pair under test.
func (p *page) radiusMatrix(t *results.Trial) {
	type pair struct{ c, s string }
	affected, total := map[pair]int{}, map[pair]int{}
	nodeSet := map[string]bool{}
	for _, n := range t.Topology.Nodes {
		nodeSet[n] = true
	}
	for _, f := range t.Summary.Flows {
		if f.Flow.Control {
			continue
		}
		k := pair{f.Flow.ClientNode, f.Flow.ServerNode}
		nodeSet[k.c], nodeSet[k.s] = true, true
		total[k]++
		if f.Affected {
			affected[k]++
		}
	}
	if len(total) == 0 {
		return
	}
	nodes := sortedKeys(nodeSet)
	faultNode := map[string]bool{}
	if t.Verdict != nil {
		for _, n := range t.Verdict.FaultNodes {
			faultNode[n] = true
		}
	}
	label := func(n string) string {
		if faultNode[n] {
			return esc(n) + " <span class=\"fn\">(fault)</span>"
		}
		return esc(n)
	}
	p.s("<table class=\"radius\"><caption>Blast radius: affected flows / flows, client node (rows) × server node (columns)</caption>\n<thead><tr><th scope=\"col\">client \\ server</th>")
	for _, n := range nodes {
		p.s("<th scope=\"col\">", label(n), "</th>")
	}
	p.s("</tr></thead>\n<tbody>\n")
	for _, c := range nodes {
		p.s("<tr><th scope=\"row\">", label(c), "</th>")
		for _, s := range nodes {
			k := pair{c, s}
			if total[k] == 0 {
				p.s("<td class=\"r-\">–</td>")
				continue
			}
			lvl := (affected[k]*4 + total[k] - 1) / total[k] // 0 only when none
			p.s("<td class=\"r", strconv.Itoa(lvl), "\">", strconv.Itoa(affected[k]), "/", strconv.Itoa(total[k]), "</td>")
		}
		p.s("</tr>\n")
	}
	p.s("</tbody></table>\n")
}

// latency summarizes successful requests' latency per phase over the
// trial's flows: the median flow's p50 says what most flows saw, the worst
// flow's p99 what the unluckiest saw. Per-flow figures are in flowTable.
func (p *page) latency(t *results.Trial) {
	phases := []struct {
		name string
		get  func(measure.LatencyByPhase) measure.LatencySummary
	}{
		{"before the fault", func(l measure.LatencyByPhase) measure.LatencySummary { return l.Before }},
		{"during the fault", func(l measure.LatencyByPhase) measure.LatencySummary { return l.During }},
		{"after recovery", func(l measure.LatencyByPhase) measure.LatencySummary { return l.After }},
	}
	p.s("<table class=\"latency\"><caption>Latency of successful requests (ms)</caption>\n<thead><tr><th scope=\"col\">phase</th>",
		"<th scope=\"col\">median flow p50</th><th scope=\"col\">worst flow p99</th><th scope=\"col\">flows with data</th></tr></thead>\n<tbody>\n")
	for _, ph := range phases {
		var p50s []float64
		worst := 0.0
		for _, f := range t.Summary.Flows {
			l := ph.get(f.Latency)
			if l.Count == 0 {
				continue
			}
			p50s = append(p50s, l.P50Ms)
			worst = max(worst, l.P99Ms)
		}
		p.s("<tr><th scope=\"row\">", ph.name, "</th>")
		if len(p50s) == 0 {
			p.s("<td colspan=\"2\">–</td><td>0</td></tr>\n")
			continue
		}
		sort.Float64s(p50s)
		p.s("<td>", num(p50s[len(p50s)/2], 1), "</td><td>", num(worst, 1), "</td><td>", strconv.Itoa(len(p50s)), "</td></tr>\n")
	}
	p.s("</tbody></table>\n")
}

// flowTable lists every flow's figures, latency by phase included. It sits
// in a closed <details>: it is long and the timeline says most of it.
func (p *page) flowTable(t *results.Trial, missing map[string]bool) {
	fs := displayOrder(t.Summary.Flows)
	measured := map[string]bool{}
	for _, f := range fs {
		measured[f.Flow.ID] = true
	}
	p.s("<details class=\"flows\"><summary>Flows: failures and latency before / during / after the fault (", strconv.Itoa(len(fs)), ")</summary>\n",
		"<table class=\"flowtab\"><thead><tr><th scope=\"col\">flow</th><th scope=\"col\">requests</th><th scope=\"col\">failed</th>",
		"<th scope=\"col\">slow (threshold ms)</th><th scope=\"col\">request every ms</th>",
		"<th scope=\"col\">outages</th><th scope=\"col\">disrupted s</th><th scope=\"col\">stream breaks / stalls</th>",
		"<th scope=\"col\">before p50 / p99 ms</th><th scope=\"col\">during p50 / p99 ms</th><th scope=\"col\">after p50 / p99 ms</th></tr></thead>\n<tbody>\n")
	lat := func(l measure.LatencySummary) string {
		if l.Count == 0 {
			return "<td>–</td>"
		}
		return "<td>" + num(l.P50Ms, 1) + " / " + num(l.P99Ms, 1) + "</td>"
	}
	for _, f := range fs {
		p.s("<tr><th scope=\"row\">", esc(f.Flow.ID))
		if f.Flow.Control {
			p.s(" (control)")
		}
		if missing[f.Flow.ID] {
			p.s(" <span class=\"nm\" data-missing=\"events\">no event file</span>")
		}
		p.s("</th><td>", strconv.Itoa(f.Requests), "</td><td>", strconv.Itoa(f.Failed), "</td><td data-slow=\"", strconv.Itoa(f.Slow), "\">",
			strconv.Itoa(f.Slow), " (", num(f.StallThresholdMs, 0), ")</td>")
		if f.CoarserThanBucket {
			p.s("<td class=\"coarse\" data-coarse=\"true\" title=\"fewer than one request per timeline bucket: outages are placed to this interval only\">",
				num(f.RequestIntervalMs, 0), " coarser than a bucket</td>")
		} else {
			p.s("<td>", num(f.RequestIntervalMs, 0), "</td>")
		}
		p.s("<td>", strconv.Itoa(len(f.Outages)), "</td><td>")
		if f.DisruptionSeconds > 0 {
			p.s(num(f.DisruptionSeconds, 3))
		} else {
			p.s("–")
		}
		p.s("</td><td>")
		if f.Flow.Profile == "tcp-stream" {
			p.s(strconv.Itoa(f.Streams.Broken), " (max reconnect ", num(f.Streams.MaxReconnectSeconds, 2), " s) / ",
				strconv.Itoa(f.Streams.Stalls), " (longest ", num(f.Streams.MaxStallSeconds, 2), " s)")
		} else {
			p.s("–")
		}
		p.s("</td>", lat(f.Latency.Before), lat(f.Latency.During), lat(f.Latency.After), "</tr>\n")
	}
	// Flows the trial planned but the summary lacks: measured nothing.
	for _, f := range t.Flows {
		if !measured[f.ID] {
			p.s("<tr><th scope=\"row\">", esc(f.ID), "</th><td colspan=\"10\" class=\"nm\" data-missing=\"flow\">not measured: no summary for this flow</td></tr>\n")
		}
	}
	p.s("</tbody></table></details>\n")
	p.outageTable(fs)
}

// outageTable says, for every outage interval, what its requests saw: how
// many failed (by class), went missing or were answered late and how late,
// and what the network and the proxies counted over it. It lets a reader
// tell "the network was down" from "the network was back, the connection
// was still retransmitting".
func (p *page) outageTable(fs []measure.FlowSummary) {
	n := 0
	for _, f := range fs {
		n += len(f.Outages)
	}
	if n == 0 {
		return
	}
	p.s("<details class=\"outages\"><summary>Outage intervals: what the requests inside each saw (", strconv.Itoa(n), ")</summary>\n",
		"<table class=\"outtab\"><thead><tr><th scope=\"col\">flow</th><th scope=\"col\">from s</th><th scope=\"col\">to s</th>",
		"<th scope=\"col\">seconds</th><th scope=\"col\">failed</th><th scope=\"col\">missing</th><th scope=\"col\">slow (p50 / max ms)</th>",
		"<th scope=\"col\">by class</th><th scope=\"col\">counted over the interval</th></tr></thead>\n<tbody>\n")
	for _, f := range fs {
		for _, o := range f.Outages {
			p.s("<tr data-flow=\"", esc(f.Flow.ID), "\"><th scope=\"row\">", esc(f.Flow.ID), "</th><td>", num(since(p.cur, o.Start), 3),
				"</td><td>", num(since(p.cur, o.End), 3), "</td><td>", num(o.Seconds, 3), "</td><td>", strconv.Itoa(o.Failed),
				"</td><td>", strconv.Itoa(o.Missing), "</td><td>", strconv.Itoa(o.Slow))
			if o.SlowLatency != nil {
				p.s(" (", num(o.SlowLatency.P50Ms, 0), " / ", num(o.SlowLatency.MaxMs, 0), ")")
			}
			var cls []string
			for c, k := range o.ByClass {
				cls = append(cls, fmt.Sprintf("%s:%d", c, k))
			}
			sort.Strings(cls)
			p.s("</td><td>", esc(dashIf(strings.Join(cls, " "))), "</td><td>", esc(dashIf(evidenceText(o.Evidence))), "</td></tr>\n")
		}
	}
	p.s("</tbody></table></details>\n")
}

// evidenceText flattens an interval's evidence (as run.json holds it) to
// "name=value" pairs in name order; zero counters are left out.
func evidenceText(ev any) string {
	if ev == nil {
		return ""
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return ""
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	var parts []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				walk(strings.TrimPrefix(prefix+"."+k, "."), x[k])
			}
		case float64:
			if x != 0 {
				parts = append(parts, prefix+"="+strconv.FormatFloat(x, 'f', -1, 64))
			}
		case []any:
			var items []string
			for _, i := range x {
				items = append(items, fmt.Sprint(i))
			}
			if len(items) > 0 {
				parts = append(parts, prefix+"="+strings.Join(items, ","))
			}
		case string:
			if x != "" {
				parts = append(parts, prefix+"="+x)
			}
		}
	}
	walk("", m)
	return strings.Join(parts, " ")
}

// displayOrder puts control flows first, the rest as measured.
func displayOrder(in []measure.FlowSummary) []measure.FlowSummary {
	fs := append([]measure.FlowSummary(nil), in...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Flow.Control && !fs[j].Flow.Control })
	return fs
}

// since is seconds from the start of load, the time axis of the page.
func since(t *results.Trial, at time.Time) float64 {
	if t.Window == nil {
		return 0
	}
	return at.Sub(t.Window.Start).Seconds()
}

func esc(s string) string { return html.EscapeString(s) }

// cls maps a value from run.json to a safe CSS class suffix.
func cls(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

// num formats with at most prec decimals and no trailing zeros, so the
// page carries no digits that say nothing.
func num(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	return d.Round(time.Millisecond).String()
}

func dashIf(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
