// Package e2e is the end-to-end suite on the embedded cluster: each spec runs
// one scenario through the real blastradius binary and checks what it
// measured against a fault whose effect is known.
package e2e
