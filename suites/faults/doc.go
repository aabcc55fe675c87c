// Package faults is the fault matrix as Ginkgo specs: one spec per built-in
// matrix scenario and data plane mode, labelled fault:<kind>, mode:<mode>,
// provider:<provider> (and slow for the longer ones), with the verdict and
// disruption figures attached as report entries and so as JUnit
// properties. The provider is $PROVIDER (netns, the default; kind;
// kubeconfig; local-k8s): the specs do not change, and a fault the
// provider cannot inject is skipped with the reason the binary gives. In
// ambient mode the node proxy's restart, crash, certificate expiry and
// restart during a control-plane outage also check what the reference data
// plane does in them, from the measured flows (checks_test.go).
package faults
