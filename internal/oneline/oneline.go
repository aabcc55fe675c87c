// Package oneline keeps text that came from elsewhere (errors, remote
// messages, kubelet events) on one line: the tool's errors are one line
// each, its logs one event per line, and tools parse them that way.
package oneline

import (
	"strings"
	"unicode/utf8"
)

// Fold puts s on one line: every run of white space, line breaks included,
// becomes one space. Longer than max bytes (max > 0), it is cut on a UTF-8
// boundary and ends in "...", so a remote message cannot spread over a log.
func Fold(s string, max int) string {
	return limit(strings.Join(strings.Fields(s), " "), max)
}

// Lines is Fold for text that lists one thing per line (a validation error
// with several problems): its lines are joined with "; ".
func Lines(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// Escape puts s on one line with nothing lost: line breaks are written as
// the two characters \n (and \r), as a Go string literal would.
func Escape(s string) string {
	return escaper.Replace(s)
}

var escaper = strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\r`)

func limit(s string, max int) string {
	if max <= 0 || len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
