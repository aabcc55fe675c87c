// Package baseline compares a results folder with earlier ones: for every
// variant of the run (scenario × mode × topology) it gathers the same
// variant's trials from baseline folders, derives thresholds from their
// history (p95 and p99 of disruption-seconds and failed requests per trial)
// and puts the run into a tier: pass, flake, regress or not enough history.
//
// It exists so that a nightly job can tell "the mesh got worse" from "the
// runner was noisy tonight" without a hand-tuned bound per scenario: the
// history of the same variant on the same kind of machine is the bound.
// docs/compare.md documents the rules and the JSON report.
package baseline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"blastradius.dev/blastradius/framework/results"
)

// Folder is one results folder and its run.json.
type Folder struct {
	Dir string
	Run *results.Run
}

// Load reads one results folder. Its errors are one line and name the
// folder: they are printed as they are.
func Load(dir string) (*Folder, error) {
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("%s: no such folder", dir)
		}
		return nil, fmt.Errorf("%s: no run.json (not a results folder)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	// The version is read on its own first: a newer run.json may not even
	// decode into this build's model, and its error would hide the reason.
	var head struct {
		SchemaVersion *int `json:"schemaVersion"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		// encoding/json would name this function's Go type ("struct {
		// SchemaVersion *int ...}"), which means nothing to whoever reads
		// the folder: say what the file holds instead.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return nil, fmt.Errorf("%s: run.json holds a JSON %s, not an object (not a blastradius run)", dir, te.Value)
		}
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s: run.json: schemaVersion is a JSON %s, want a number", dir, te.Value)
		}
		return nil, fmt.Errorf("%s: run.json: %v", dir, err)
	}
	switch {
	case head.SchemaVersion == nil || *head.SchemaVersion < 1:
		return nil, fmt.Errorf("%s: run.json has no schemaVersion (not a blastradius run)", dir)
	case *head.SchemaVersion > results.SchemaVersion:
		return nil, fmt.Errorf("%s: run.json schema version %d is newer than this build reads (%d)", dir, *head.SchemaVersion, results.SchemaVersion)
	}
	var r results.Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: run.json: %v", dir, err)
	}
	return &Folder{Dir: dir, Run: &r}, nil
}

// LoadBaseline reads a baseline: a results folder, or a store of them (a
// folder whose direct subfolders are results folders, such as results/ or
// the nightly workflow's cache). A store lets a CI job pass one --baseline
// however many runs it keeps; subfolders without run.json (junit/, a
// report's assets) are not runs and are passed over.
func LoadBaseline(dir string) ([]*Folder, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: no such folder", dir)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a folder", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "run.json")); err == nil {
		f, err := Load(dir)
		if err != nil {
			return nil, err
		}
		return []*Folder{f}, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	var out []*Folder
	for _, e := range ents {
		sub := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(sub, "run.json")); err != nil {
			continue
		}
		f, err := Load(sub)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no run.json (not a results folder, nor a folder of them)", dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, nil
}
