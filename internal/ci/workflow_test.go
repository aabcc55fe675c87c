package ci

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
)

// root is the repository root: the folder holding go.mod, above this
// package.
func root(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = up
	}
}

func workflows(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yml", "*.yaml"} {
		m, err := filepath.Glob(filepath.Join(root(t), ".github", "workflows", pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no workflow in .github/workflows")
	}
	return files
}

// Every workflow must pass actionlint: syntax, expressions and contexts,
// action inputs of popular actions, cron syntax, step IDs. Shellcheck and
// pyflakes are left off on purpose (empty executables): whether they run
// would depend on what the machine has installed.
func TestWorkflowsLint(t *testing.T) {
	// The project is given explicitly: actionlint would otherwise look for
	// a .git folder, which a source tarball does not have.
	proj, err := actionlint.NewProject(root(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range workflows(t) {
		var out bytes.Buffer
		l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{Oneline: true, Color: actionlint.ColorOptionKindNever})
		if err != nil {
			t.Fatal(err)
		}
		errs, err := l.LintFile(f, proj)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, e := range errs {
			t.Errorf("%s:%d:%d: %s [%s]", filepath.Base(f), e.Line, e.Column, e.Message, e.Kind)
		}
	}
}

// The nightly workflow does what docs/compare.md says it does.
func TestNightlyShape(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), ".github", "workflows", "nightly.yml"))
	if err != nil {
		t.Fatal(err)
	}
	w, errs := actionlint.Parse(b)
	if len(errs) > 0 {
		t.Fatalf("parse: %v", errs[0])
	}
	events := map[string]bool{}
	for _, e := range w.On {
		events[e.EventName()] = true
	}
	if !events["schedule"] || !events["workflow_dispatch"] {
		t.Errorf("triggers %v, want schedule and workflow_dispatch", events)
	}
	uses := map[string]map[string]string{}
	var runs []string
	for _, j := range w.Jobs {
		if j.RunsOn == nil || len(j.RunsOn.Labels) != 1 || j.RunsOn.Labels[0].Value != "ubuntu-latest" {
			t.Errorf("job %s does not run on ubuntu-latest", j.ID.Value)
		}
		for _, s := range j.Steps {
			switch x := s.Exec.(type) {
			case *actionlint.ExecAction:
				name, _, _ := strings.Cut(x.Uses.Value, "@")
				in := map[string]string{}
				for k, v := range x.Inputs {
					in[k] = v.Value.Value
				}
				uses[name] = in
			case *actionlint.ExecRun:
				runs = append(runs, x.Run.Value)
			}
		}
	}
	if uses["actions/setup-go"]["go-version-file"] != "go.mod" {
		t.Errorf("setup-go inputs %v, want go-version-file: go.mod", uses["actions/setup-go"])
	}
	for _, a := range []string{"actions/checkout", "actions/upload-artifact", "actions/cache/restore", "actions/cache/save"} {
		if _, ok := uses[a]; !ok {
			t.Errorf("no step uses %s", a)
		}
	}
	all := strings.Join(runs, "\n")
	// The kind job's pods run an image no registry has: its step must build
	// it, which make e2e does for PROVIDER=kind (make images); a bare
	// `blastradius run --provider kind` would stop at the missing archive.
	if !strings.Contains(all, "make e2e PROVIDER=kind") {
		t.Error("no run step builds the image for the kind job (make e2e PROVIDER=kind)")
	}
	if strings.Contains(all, "run --provider kind") {
		t.Error("a run step runs the kind matrix without building the image it needs")
	}
	for _, want := range []string{"make e2e", "bin/blastradius report", "bin/blastradius compare", "--baseline baselines", "go test"} {
		if !strings.Contains(all, want) {
			t.Errorf("no run step does %q", want)
		}
	}
}
