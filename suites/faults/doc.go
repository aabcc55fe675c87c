// Package faults is the fault matrix as Ginkgo specs: one spec per built-in
// matrix scenario and data plane mode on the embedded cluster, labelled
// fault:<kind>, mode:<mode>, provider:netns (and slow for the longer ones),
// with the verdict and disruption figures attached as report entries and so
// as JUnit properties.
package faults
