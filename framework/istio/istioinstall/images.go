package istioinstall

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Built is an image `make istio-images` wrote: an archive the providers
// load into their nodes.
type Built struct {
	Part      string // PartIstiod, PartCNI
	Reference string
	Archive   string // absolute
	ID        string // the image ID (config digest) the kubelet reports
	Digest    string
}

// ReadBuilt reads the images.json in dir (`make istio-images`) and
// returns istiod's and istio-cni's images by part; both must be there.
func ReadBuilt(dir string) (map[string]Built, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no Istio images in %s: run `make istio-images`", dir)
		}
		return nil, fmt.Errorf("istio images: %v", err)
	}
	var idx struct {
		Images []struct {
			Reference, Archive, ID, Digest string
		} `json:"images"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("istio images: %s: %v", filepath.Join(dir, "images.json"), err)
	}
	out := map[string]Built{}
	for _, e := range idx.Images {
		repo, _, _ := strings.Cut(e.Reference, ":")
		var part string
		switch path.Base(repo) {
		case "pilot":
			part = PartIstiod
		case "install-cni":
			part = PartCNI
		default:
			continue
		}
		a := e.Archive
		if !filepath.IsAbs(a) {
			a = filepath.Join(dir, a)
		}
		if _, err := os.Stat(a); err != nil {
			return nil, fmt.Errorf("istio images: %s: archive %s: %v (run `make istio-images`)", e.Reference, a, err)
		}
		out[part] = Built{Part: part, Reference: e.Reference, Archive: a, ID: e.ID, Digest: e.Digest}
	}
	for _, p := range []string{PartIstiod, PartCNI} {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("istio images: %s has no %s image (run `make istio-images`)", filepath.Join(dir, "images.json"), p)
		}
	}
	return out, nil
}
