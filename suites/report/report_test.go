// Package report checks the HTML report the way a reader sees it: in a
// headless Chromium, offline. It runs a real embedded run with the built
// binary, renders its report and asserts that the page loads nothing from
// anywhere, logs no error, shows the outages of the faulted flows and loads
// in under 2 s; and that the answer section it opens with shows, row by
// row, the figures run.json holds.
//
// Chromium is required: without it the test fails and says how to install
// it (apt-get install chromium). BLASTRADIUS_NO_BROWSER=1 skips it instead.
// BLASTRADIUS_CHROMIUM overrides the browser binary. The screenshots go to
// $BLASTRADIUS_ARTIFACTS_DIR (default <repo>/results/artifacts): report.png
// (the page) and answer.png (the answer section), with answer.txt, the
// answer as the run printed it.
//
// BLASTRADIUS_REPORT_DIR=<results folder> additionally checks the report of
// an existing run (e.g. results/e2e-final) and logs its size and load time;
// pointed at an .html file, it checks that file as it is.
package report

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/suites/internal/suiterun"
)

// tb is what the checks need of a test: Ginkgo's GinkgoT() provides it.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Error(args ...any)
	Skip(args ...any)
	Logf(format string, args ...any)
	TempDir() string
}

func TestReport(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "blastradius HTML report in a browser")
}

var _ = ReportAfterSuite("junit", func(r Report) { suiterun.JUnit(r, "report") })

// Labelled like the other suites so that a label filter over ./suites/...
// works here too (and selects or skips these specs).
var _ = Describe("HTML report", Label("report", "provider:netns", "mode:none", "mode:ambient"), func() {
	// One real run serves both specs: a run is most of their time.
	Context("of a real run", Ordered, func() {
		var rr *realRun
		BeforeAll(func() {
			if suiterun.OnKubernetes() {
				Skip("renders a run of the embedded cluster; with PROVIDER=" + suiterun.Provider() + " give a run's folder in BLASTRADIUS_REPORT_DIR to the last spec")
			}
			rr = runForReport(GinkgoT())
		})
		It("opens offline in headless Chromium: no request leaves, no console error, outages shaded, loads in < 2 s", func() {
			reportInBrowser(GinkgoT(), rr)
		})
		It("opens with the answer section, whose every row shows what run.json says", func() {
			answerInBrowser(GinkgoT(), rr)
		})
	})
	It("checks an existing run's report (BLASTRADIUS_REPORT_DIR)", func() {
		existingReportInBrowser(GinkgoT())
	})
})

// loadBudget is the longest the report may take to load.
const loadBudget = 2 * time.Second

// The run is short on purpose: two nodes, the default flow kinds, in modes
// none and ambient. scenario crashes node-2 and reboots it; proxyScenario
// kills node-2's node proxy, the question the answer section is about. The
// node proxy's trial in mode none is skipped (no node proxy there), which
// the report shows with the reason.
const scenario = `name: report-browser
description: node-2 crashes 2 s into load and reboots 3 s later.
topology:
  nodes: 2
load:
  duration: 8s
fault:
  kind: node-crash
  node: node-2
  at: 2s
  recoverAfter: 3s
`

const proxyScenario = `name: report-browser-proxy
description: node-2's node proxy is SIGKILLed 2 s into load; its supervisor restarts it.
topology:
  nodes: 2
load:
  duration: 8s
fault:
  kind: node-proxy-crash
  node: node-2
  at: 2s
`

// realRun is the run the browser specs share.
type realRun struct {
	chrome string
	dir    string // the results folder
	page   string // its report.html
	run    *results.Run
	output string // what blastradius run printed
}

// runForReport builds the binary, runs both scenarios in none and ambient
// and renders the report.
func runForReport(t tb) *realRun {
	rr := &realRun{chrome: browser(t)}
	dir := t.TempDir()
	bin := filepath.Join(dir, "blastradius")
	if out, err := exec.Command("go", "build", "-o", bin, "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var files []string
	for name, body := range map[string]string{"report-browser.yaml": scenario, "report-browser-proxy.yaml": proxyScenario} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	slices.Sort(files) // the node crash first, as the matrix runs it
	rr.dir = filepath.Join(dir, "run")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "run", "--mode", "none,ambient", "--scenario", strings.Join(files, ","), "--out", rr.dir).CombinedOutput()
	rr.output = string(out)
	if err != nil {
		// A failed expectation still leaves a full results folder; only a
		// run without run.json is a reason to stop.
		if _, lerr := results.Load(rr.dir); lerr != nil {
			t.Fatalf("blastradius run: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command(bin, "report", rr.dir).CombinedOutput(); err != nil {
		t.Fatalf("blastradius report: %v\n%s", err, out)
	}
	if rr.run, err = results.Load(rr.dir); err != nil {
		t.Fatal(err)
	}
	rr.page = filepath.Join(rr.dir, "report.html")
	return rr
}

func reportInBrowser(t tb, rr *realRun) {
	res := check(t, rr.chrome, rr.page, true)
	res.assert(t)
	// The crash of node-2 must show as shaded outages on node-2's flows.
	if res.faultedWithOutage == 0 {
		t.Errorf("no timeline row of a flow to or from node-2 has a shaded outage (rect.out)")
	}
	if len(res.screenshot) > 0 {
		t.Logf("screenshot: %s", artifact(t, "report.png", res.screenshot))
	}
}

// artifact writes b into the artifacts folder and returns its path.
func artifact(t tb, name string, b []byte) string {
	t.Helper()
	art := os.Getenv("BLASTRADIUS_ARTIFACTS_DIR")
	if art == "" {
		art = filepath.Join("..", "..", "results", "artifacts")
	}
	if err := os.MkdirAll(art, 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := filepath.Abs(filepath.Join(art, name))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// existingReportInBrowser checks the report of a run already on disk,
// named by BLASTRADIUS_REPORT_DIR; it renders report.html there first.
func existingReportInBrowser(t tb) {
	dir := os.Getenv("BLASTRADIUS_REPORT_DIR")
	if dir == "" {
		t.Skip("set BLASTRADIUS_REPORT_DIR=<results folder> to check an existing run's report")
	}
	chrome := browser(t)
	if strings.HasSuffix(dir, ".html") {
		// A report already rendered: check it as it is.
		check(t, chrome, dir, false).assert(t)
		return
	}
	bin := filepath.Join(t.TempDir(), "blastradius")
	if out, err := exec.Command("go", "build", "-o", bin, "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out := filepath.Join(t.TempDir(), "report.html")
	if b, err := exec.Command(bin, "report", dir, "--out", out).CombinedOutput(); err != nil {
		t.Fatalf("blastradius report: %v\n%s", err, b)
	}
	res := check(t, chrome, out, false)
	res.assert(t)
}

// browser finds Chromium, or fails saying how to get it: a skipped browser
// test would let a broken report through unnoticed.
func browser(t tb) string {
	t.Helper()
	if os.Getenv("BLASTRADIUS_NO_BROWSER") == "1" {
		t.Skip("BLASTRADIUS_NO_BROWSER=1: browser check of the HTML report skipped")
	}
	if p := os.Getenv("BLASTRADIUS_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: the HTML report's browser test needs it; install it (apt-get install chromium), " +
		"point BLASTRADIUS_CHROMIUM at a Chrome binary, or set BLASTRADIUS_NO_BROWSER=1 to skip this test")
	return ""
}

type result struct {
	file              string
	size              int64
	loadMs            float64 // Performance API: navigation start to the end of the load event
	wall              time.Duration
	requests          []string // every URL the page asked for, the page included
	blocked           []string // URLs other than the page: each one a failure
	consoleErrors     []string
	outages           int // shaded outage elements on the page
	faultedWithOutage int // rows of flows with an end on node-2 that have one
	screenshot        []byte
}

func (r *result) assert(t tb) {
	t.Helper()
	t.Logf("%s: %d bytes, loaded in %.0f ms (Performance API), %v navigation wall time, %d outage elements, requests %v",
		r.file, r.size, r.loadMs, r.wall.Round(time.Millisecond), r.outages, r.requests)
	if len(r.blocked) > 0 {
		t.Errorf("the page tried to load %d resource(s) besides itself: %v", len(r.blocked), r.blocked)
	}
	if len(r.consoleErrors) > 0 {
		t.Errorf("console errors or exceptions: %v", r.consoleErrors)
	}
	if r.outages == 0 {
		t.Errorf("no shaded outage (rect.out) anywhere on the page")
	}
	if r.loadMs <= 0 || r.loadMs >= float64(loadBudget.Milliseconds()) {
		t.Errorf("page load took %.0f ms, budget %v", r.loadMs, loadBudget)
	}
}

// check opens file in a headless Chromium with every request other than the
// file itself failed (Fetch domain), and records what the page did.
func check(t tb, chrome, file string, shot bool) *result {
	t.Helper()
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		t.Fatal(err)
	}
	pageURL := (&url.URL{Scheme: "file", Path: abs}).String()
	res := &result{file: abs, size: st.Size()}

	ctx, cancel := offlineBrowser(chrome)
	defer cancel()

	var mu sync.Mutex
	note := func(list *[]string, s string) {
		mu.Lock()
		*list = append(*list, s)
		mu.Unlock()
	}
	// The listener runs on the goroutine that reads the browser's messages:
	// it records and hands commands to other goroutines, never waits.
	listen := func(ev any) {
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			note(&res.requests, ev.Request.URL)
			if ev.Request.URL != pageURL {
				note(&res.blocked, ev.Request.URL)
			}
		case *fetch.EventRequestPaused:
			go func() {
				if ev.Request.URL == pageURL {
					_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
					return
				}
				note(&res.blocked, ev.Request.URL)
				_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
			}()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range ev.Args {
					if a.Description != "" {
						parts = append(parts, a.Description)
					} else {
						parts = append(parts, string(a.Value))
					}
				}
				note(&res.consoleErrors, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			note(&res.consoleErrors, "exception: "+msg)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				note(&res.consoleErrors, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}
	// Start the browser on a blank page and enable the domains there, so
	// the timed navigation is the report's alone.
	if err := chromedp.Listen(ctx, listen); err != nil {
		t.Fatalf("start chromium %s: %v", chrome, err)
	}
	enable := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, tg, runtime.Enable, cdp.Empty{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}})
		return err
	})
	if err := chromedp.Do(ctx, enable); err != nil {
		t.Fatalf("chromium %s: enable domains: %v", chrome, err)
	}
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("open %s: %v", pageURL, err)
	}
	res.wall = time.Since(start)
	var err2 error
	if res.loadMs, err2 = chromedp.Run(ctx, chromedp.Evaluate[float64](`(() => { const n = performance.getEntriesByType("navigation")[0]; return n ? n.loadEventEnd - n.startTime : -1; })()`)); err2 != nil {
		t.Fatalf("performance timing of %s: %v", pageURL, err2)
	}
	if res.outages, err2 = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("g.fl rect.out").length`)); err2 != nil {
		t.Fatalf("query %s: %v", pageURL, err2)
	}
	if res.faultedWithOutage, err2 = chromedp.Run(ctx, chromedp.Evaluate[int](
		`[...document.querySelectorAll("g.fl")].filter(g => /(^|[^0-9])n2-to-|-to-n2[.]/.test(g.dataset.flow) && g.querySelector("rect.out")).length`)); err2 != nil {
		t.Fatalf("query %s: %v", pageURL, err2)
	}
	if shot {
		if res.screenshot, err2 = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err2 != nil {
			t.Errorf("screenshot: %v", err2)
		}
	}
	// Late events (an error after load) are still collected: give the
	// page a moment before reading them.
	if err := chromedp.Do(ctx, chromedp.Sleep(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// A blocked request shows up both as paused and as sent: count it once.
	seen := map[string]bool{}
	var blocked []string
	for _, u := range res.blocked {
		if !seen[u] {
			seen[u] = true
			blocked = append(blocked, u)
		}
	}
	res.blocked = blocked
	res.requests = append([]string(nil), res.requests...)
	return res
}

// offlineBrowser starts a headless Chromium that cannot reach anything:
// no name resolves and no proxy is reachable.
func offlineBrowser(chrome string) (context.Context, context.CancelFunc) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // CI runs as root, where Chromium refuses its sandbox
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1600),
		// Belt and braces next to check's Fetch block: nothing could leave
		// even if a request slipped past interception.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND"),
		chromedp.ProxyServer("http://127.0.0.1:9"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	return ctx, func() { cancelCtx(); cancelAlloc() }
}

// String is the one-line summary printed for an existing run's check.
func (r *result) String() string {
	return fmt.Sprintf("%s %d bytes %.0f ms", r.file, r.size, r.loadMs)
}
