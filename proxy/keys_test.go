package proxy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// site is a place in the code: file (relative to the module root) and the
// function the expression is in.
type site struct{ file, fn string }

func (s site) String() string { return s.file + ":" + s.fn }

// goFiles parses every non-test Go file under the module directories dirs.
func goFiles(t *testing.T, dirs ...string) map[string]*ast.File {
	t.Helper()
	out := map[string]*ast.File{}
	fset := token.NewFileSet()
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join("..", d), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && (strings.HasPrefix(e.Name(), ".") || e.Name() == "testdata") {
				return filepath.SkipDir
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel("..", path)
			out[filepath.ToSlash(rel)] = f
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// inspectFuncs calls fn for every node inside a function body, with the
// function's name.
func inspectFuncs(files map[string]*ast.File, fn func(s site, n ast.Node)) {
	for path, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			s := site{path, fd.Name.Name}
			ast.Inspect(fd.Body, func(n ast.Node) bool { fn(s, n); return true })
		}
	}
}

// selector returns "x.Name" for a call of x.Name (a package function or a
// method on a variable), ".Name" for a method on any other expression.
func selector(call *ast.CallExpr) string {
	se, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	if id, ok := se.X.(*ast.Ident); ok {
		return id.Name + "." + se.Sel.Name
	}
	return "." + se.Sel.Name
}

func sortedSites(m map[site]bool) []string {
	var out []string
	for s := range m {
		out = append(out, s.String())
	}
	slices.Sort(out)
	return out
}

// TestPrivateKeysNeverWrittenToDisk is the static half of the "no private
// key on disk" property (the dynamic half runs the flows in empty
// directories: proxy/ca, proxy/controlplane). It pins down, by reading the
// code, every place a private key is serialised, every caller of that, and
// every file write in the data plane, so a new one fails here and has to be
// reviewed:
//
//   - the only code that serialises a private key is ca.RootKeyPEM (workload
//     keys are never serialised: they go from ecdsa.GenerateKey into a
//     tls.Certificate);
//   - RootKeyPEM's only callers are the runner, which hands the root to the
//     control plane in its environment, and the control plane's --ca-dir
//     option, which writes it with mode 0600;
//   - the data plane writes no other files than the ready file, that
//     0600/0644 pair and /proc/sys.
func TestPrivateKeysNeverWrittenToDisk(t *testing.T) {
	proxyFiles := goFiles(t, "proxy")
	if len(proxyFiles) < 20 {
		t.Fatalf("found %d files under proxy/: is the walk broken?", len(proxyFiles))
	}
	serialise := map[site]bool{}
	writes := map[site]bool{}
	inspectFuncs(proxyFiles, func(s site, n ast.Node) {
		switch n := n.(type) {
		case *ast.CallExpr:
			switch sel := selector(n); sel {
			case "x509.MarshalPKCS8PrivateKey", "x509.MarshalECPrivateKey", "x509.MarshalPKCS1PrivateKey":
				serialise[s] = true
			case "os.WriteFile", "os.Create", "os.OpenFile", "os.CreateTemp", "ioutil.WriteFile":
				writes[s] = true
			}
		case *ast.BasicLit:
			// A PEM block type being built (parsing one only compares).
			if v, err := strconv.Unquote(n.Value); err == nil && strings.Contains(v, "PRIVATE KEY") {
				serialise[s] = true
			}
		}
	})
	// Load names the PEM types to parse a key handed to it; it makes none.
	delete(serialise, site{"proxy/ca/ca.go", "Load"})
	if got, want := sortedSites(serialise), []string{"proxy/ca/ca.go:RootKeyPEM"}; !slices.Equal(got, want) {
		t.Errorf("private keys are serialised in %v, want only %v", got, want)
	}
	if got, want := sortedSites(writes), []string{
		"proxy/controlplane/controlplane.go:writeFileAtomic",
		"proxy/netnsx/netnsx.go:SetSysctl",
		"proxy/node/main.go:watchReady",
	}; !slices.Equal(got, want) {
		t.Errorf("the data plane writes files in %v, want only %v", got, want)
	}

	// Who gets the serialised root key, anywhere in the module.
	all := goFiles(t, "proxy", "framework", "cmd", "reports", "suites")
	callers := map[site]bool{}
	keyWrites := 0
	inspectFuncs(all, func(s site, n ast.Node) {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return
		}
		if strings.HasSuffix(selector(call), ".RootKeyPEM") {
			callers[s] = true
		}
		// loadCA's write of the key: mode 0600, nothing looser.
		if s.fn == "loadCA" && len(call.Args) == 3 {
			if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "writeFileAtomic" {
				if arg, ok := call.Args[1].(*ast.Ident); ok && arg.Name == "keyPEM" {
					keyWrites++
					if lit, ok := call.Args[2].(*ast.BasicLit); !ok || lit.Value != "0o600" {
						t.Errorf("loadCA writes the root key with mode %s, want 0o600", types.ExprString(call.Args[2]))
					}
				}
			}
		}
	})
	// The Kubernetes trial puts the reference control plane's root into a
	// Secret of the trial's namespace (deleted with it), the way istiod
	// keeps its own root: into the API server, never a node's disk.
	if got, want := sortedSites(callers), []string{
		"framework/dataplane/reference.go:Deploy",
		"framework/kubetrial/trial.go:controlPlaneCA",
		"proxy/controlplane/controlplane.go:loadCA",
	}; !slices.Equal(got, want) {
		t.Errorf("RootKeyPEM is called from %v, want only %v", got, want)
	}
	if keyWrites != 1 {
		t.Errorf("loadCA writes keyPEM %d times, want 1 (the check above saw none: was it renamed?)", keyWrites)
	}
}
