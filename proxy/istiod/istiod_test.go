package istiod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLinkRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		l    Link
		want string
	}{
		{"plaintext with a root", Link{Plaintext: true, RootFile: notPEM, Prefix: "xds"}, "xds: istiod client: a root was given but Plaintext is set"},
		{"two roots", Link{RootPEM: []byte("x"), RootFile: notPEM, Prefix: "ca"}, "ca: istiod client: give RootPEM or RootFile, not both"},
		{"no root", Link{Prefix: "ca"}, "no root to verify istiod with"},
		{"root not PEM", Link{RootFile: notPEM, Prefix: "xds"}, "xds: istiod root " + notPEM + " holds no PEM certificate"},
		{"root missing", Link{RootFile: filepath.Join(dir, "nope"), Prefix: "xds"}, "xds: istiod root: open "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.l.Credentials(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := (Link{Plaintext: true}).Credentials(); err != nil {
		t.Errorf("plaintext: %v", err)
	}
}

func TestTokenReadAfresh(t *testing.T) {
	f := filepath.Join(t.TempDir(), "istio-token")
	for _, tc := range []struct{ content, want, wantErr string }{
		{"abc.def.ghi\n", "abc.def.ghi", ""},
		{"  \n", "", "is empty"},
		{"a\nb\n", "", "holds more than one line"},
	} {
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Token("ca", f)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("token %q: %q, %v; want an error saying %q", tc.content, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("token %q: %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	if _, err := Token("ca", filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "ca: service-account token: open") {
		t.Errorf("missing token: %v", err)
	}
}
