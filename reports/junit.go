package reports

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"blastradius.dev/blastradius/framework/results"
)

// The JUnit XML elements, in the shape CI tools read (Jenkins, GitLab,
// GitHub test reporters): <testsuites> of <testsuite> of <testcase>.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string           `xml:"name,attr"`
	Tests      int              `xml:"tests,attr"`
	Failures   int              `xml:"failures,attr"`
	Errors     int              `xml:"errors,attr"`
	Skipped    int              `xml:"skipped,attr"`
	Time       string           `xml:"time,attr"`
	Timestamp  string           `xml:"timestamp,attr,omitempty"`
	Properties *junitProperties `xml:"properties"`
	Cases      []junitCase      `xml:"testcase"`
}

// junitProperties is a pointer in its parents so that a trial without
// figures has no empty <properties/> ("properties>property,omitempty"
// would still write the wrapper).
type junitProperties struct {
	Property []junitProperty `xml:"property"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name       string           `xml:"name,attr"`
	Classname  string           `xml:"classname,attr"`
	Time       string           `xml:"time,attr"`
	Properties *junitProperties `xml:"properties"`
	Skipped    *junitSkipped    `xml:"skipped"`
	Errors     []junitResult    `xml:"error"`
	Failures   []junitResult    `xml:"failure"`
	SystemOut  string           `xml:"system-out,omitempty"`
}

type junitSkipped struct {
	Message string `xml:"message,attr"`
}

type junitResult struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Body    string `xml:",cdata"` // multi-line details stay readable (chardata would escape newlines)
}

// JUnit writes the run as JUnit XML: one <testsuite> per scenario and mode
// (in the order they first ran), one <testcase> per trial named
// "<scenario> [<mode>] #<index>". A failed expectation is a <failure>
// (message: the expectation's name, body: its detail; one per failed
// expectation), a trial that could not be carried out an <error>, a
// skipped one <skipped message="reason">. Each measured trial carries its
// disruption figures as testcase <properties>, so CI tools can chart them.
func JUnit(w io.Writer, run *results.Run) error {
	type key struct{ sc, mode string }
	var order []key
	suites := map[key]*junitSuite{}
	secs := map[key]float64{}
	all := junitSuites{Name: "blastradius " + run.ID}
	total := 0.0
	for _, t := range run.Trials {
		k := key{t.Scenario, t.Mode}
		s := suites[k]
		if s == nil {
			s = &junitSuite{Name: fmt.Sprintf("%s [%s]", t.Scenario, t.Mode), Timestamp: t.Started.UTC().Format("2006-01-02T15:04:05")} // the JUnit schema's timestamp has no zone
			s.Properties = &junitProperties{[]junitProperty{{"scenario", t.Scenario}, {"fault", t.Fault}, {"mode", t.Mode},
				{"provider", run.Environment.Provider}, {"version", run.Environment.Version}}}
			suites[k] = s
			order = append(order, k)
		}
		c, d := junitCaseOf(t)
		s.Tests++
		switch {
		case c.Skipped != nil:
			s.Skipped++
		case len(c.Errors) > 0:
			s.Errors++
		case len(c.Failures) > 0:
			s.Failures++
		}
		secs[k] += d
		total += d
		s.Cases = append(s.Cases, c)
	}
	for _, k := range order {
		s := suites[k]
		s.Time = seconds(secs[k])
		all.Tests += s.Tests
		all.Failures += s.Failures
		all.Errors += s.Errors
		all.Skipped += s.Skipped
		all.Suites = append(all.Suites, *s)
	}
	all.Time = seconds(total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// junitCaseOf is one trial as a testcase, and its duration in seconds.
func junitCaseOf(t *results.Trial) (junitCase, float64) {
	c := junitCase{Name: fmt.Sprintf("%s [%s] #%d", t.Scenario, t.Mode, t.Index), Classname: "blastradius." + t.Scenario}
	// A trial records no end: its time is setup plus the load window, the
	// part that measures anything (tear-down is not recorded).
	d := t.SetupSeconds
	if t.Window != nil {
		d += t.Window.End.Sub(t.Window.Start).Seconds()
	}
	c.Time = seconds(d)
	switch t.Status {
	case results.StatusSkipped:
		c.Skipped = &junitSkipped{Message: t.Error}
		return c, d
	case results.StatusError, results.StatusInterrupted, results.StatusRunning:
		msg := t.Error
		if t.Status == results.StatusRunning {
			// Still "running" in a finished run.json: the runner died
			// mid-trial (a kill -9); the trial never finished.
			msg = "the trial never finished (the run was killed)"
		}
		first, _, _ := strings.Cut(msg, "\n")
		c.Errors = append(c.Errors, junitResult{Message: first, Type: t.Status, Body: msg})
	}
	for _, e := range t.Expectations {
		if e.Failed() {
			c.Failures = append(c.Failures, junitResult{Message: e.Name, Type: "expectation", Body: e.Detail})
		}
	}
	var ps []junitProperty
	if v := t.Verdict; v != nil {
		ps = append(ps,
			junitProperty{"verdict", v.Value},
			junitProperty{"affectedFlows", strconv.Itoa(v.Affected)},
			junitProperty{"totalFlows", strconv.Itoa(v.Total)},
			junitProperty{"disruptionSeconds", strconv.FormatFloat(v.DisruptionSeconds, 'f', -1, 64)},
			junitProperty{"failedRequests", strconv.Itoa(v.FailedRequests)},
			junitProperty{"brokenStreams", strconv.Itoa(v.BrokenStreams)},
			junitProperty{"slowRequests", strconv.Itoa(v.SlowRequests)},
			junitProperty{"stalledStreams", strconv.Itoa(v.StalledStreams)},
			junitProperty{"failedDisruptionSeconds", strconv.FormatFloat(v.FailedDisruptionSeconds, 'f', -1, 64)},
			junitProperty{"faultNodes", strings.Join(v.FaultNodes, ",")})
	}
	if t.Summary != nil || t.Verdict != nil {
		ps = append(ps, junitProperty{"noisy", strconv.FormatBool(t.Noisy)})
		if t.Noisy {
			c.SystemOut = "noisy: " + strings.Join(t.NoisyReasons, "; ")
		}
	}
	if t.NoControlFlow != "" {
		ps = append(ps, junitProperty{"noControlFlow", t.NoControlFlow})
	}
	if t.Dir != "" && len(ps) > 0 {
		ps = append(ps, junitProperty{"dir", t.Dir})
	}
	if len(ps) > 0 {
		c.Properties = &junitProperties{ps}
	}
	return c, d
}

func seconds(s float64) string { return strconv.FormatFloat(s, 'f', 3, 64) }

// JUnitFile writes <dir>/junit.xml for a run, atomically (through a
// temporary file and a rename): a CI job that picks it up while the run
// ends never reads half a file.
func JUnitFile(dir string, run *results.Run) error {
	tmp, err := os.CreateTemp(dir, ".junit.xml.*")
	if err != nil {
		return fmt.Errorf("junit.xml: %w", err)
	}
	err = JUnit(tmp, run)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, "junit.xml"))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("junit.xml: %w", err)
	}
	return nil
}
