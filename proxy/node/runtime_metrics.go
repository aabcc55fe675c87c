package node

import (
	"fmt"
	"io"
	"runtime"
)

// writeRuntimeMetrics adds the process's goroutine count to /metrics under
// the name client_golang uses (go_goroutines), so a scraper or the soak
// (framework/soak) can watch for goroutine leaks without a profile.
func writeRuntimeMetrics(w io.Writer) {
	fmt.Fprintf(w, "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n", runtime.NumGoroutine())
}
