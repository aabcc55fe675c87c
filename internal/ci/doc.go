// Package ci holds the checks of the project's CI configuration: its test
// lints .github/workflows with actionlint, because go test does not look
// inside dot folders and a broken workflow otherwise shows up only when
// GitHub runs it (at night, for the nightly one).
package ci
