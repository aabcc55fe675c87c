//go:build nokube

package main

import (
	"fmt"
	"io"
)

// clusterCmd: the slim build for pods has no cluster providers.
func clusterCmd(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "blastradius cluster:", errNoKube)
	return 2
}
