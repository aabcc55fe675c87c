package oneline

import "testing"

func TestFold(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 0, "plain"},
		{"a\n  b\r\n\tc  ", 0, "a b c"},
		{"abcdef", 3, "abc..."},
		{"abcdef", 6, "abcdef"},
		{"aé", 2, "a..."}, // é is two bytes: not cut in half
		{"x\ny", -1, "x y"},
	} {
		if got := Fold(tc.in, tc.max); got != tc.want {
			t.Errorf("Fold(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestLines(t *testing.T) {
	if got, want := Lines("bad node:\n  field x\n\n  field  y\n"), "bad node:; field x; field y"; got != want {
		t.Errorf("Lines = %q, want %q", got, want)
	}
}

func TestEscape(t *testing.T) {
	if got, want := Escape("a\r\nb\nc\rd"), `a\nb\nc\rd`; got != want {
		t.Errorf("Escape = %q, want %q", got, want)
	}
}
