// Package cluster is the provider-neutral surface for clusters. The embedded
// provider lives in cluster/netns; this package also reads the kind cluster
// configuration the kind provider creates clusters from.
package cluster
