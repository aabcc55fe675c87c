package events

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// WriteArchive writes dir's *.jsonl event files as a tar stream. A client
// pod on Kubernetes sends its events back this way (`blastradius events`
// through pods/exec: the image holds the binary alone, no shell or tar).
// Each file is sent at the size seen when it is opened, so an agent still
// appending cannot make the header lie.
func WriteArchive(dir string, w io.Writer) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range ents {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != ".jsonl" {
			continue
		}
		if err := addFile(tw, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(path), Mode: 0o644, Size: st.Size(), ModTime: st.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, st.Size())
	return err
}

// ReadArchive writes the event files of a WriteArchive stream into dir and
// returns how many. Only plain *.jsonl names are accepted: the stream
// comes from a pod, and a name with a path in it must not write outside
// dir.
func ReadArchive(r io.Reader, dir string) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("events archive: %w", err)
		}
		name := h.Name
		if h.Typeflag != tar.TypeReg || name != filepath.Base(name) || !strings.HasSuffix(name, ".jsonl") || strings.HasPrefix(name, ".") {
			return n, fmt.Errorf("events archive: unexpected entry %q", name)
		}
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return n, err
		}
		_, err = io.Copy(f, io.LimitReader(tr, h.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, err
		}
		n++
	}
}
