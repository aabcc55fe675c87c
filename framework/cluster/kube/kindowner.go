package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"blastradius.dev/blastradius/internal/procfs"
)

// A kind cluster outlives the run that created it when that run is killed
// (SIGKILL, a CI job timeout): its node containers keep running. The run
// leaves an owner record while it holds a cluster it created, so the next
// run, or `blastradius cluster down --provider kind`, can tell a leftover
// of a dead run (deleted) from a cluster someone else made or a run that
// is still going (left alone).

// KindOwner is the record of the run that created a kind cluster.
type KindOwner struct {
	Cluster    string    `json:"cluster"`
	Pid        int       `json:"pid"`
	PidStart   uint64    `json:"pidStart"` // start time of pid (/proc/<pid>/stat field 22): tells a reused pid apart
	Kubeconfig string    `json:"kubeconfig"`
	Created    time.Time `json:"created"`
}

// kindOwnerDir is where owner records live: the user's cache folder, so a
// run from any working directory finds them.
var kindOwnerDir = func() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kind: owner records: %v", err)
	}
	return filepath.Join(d, "blastradius", "kind"), nil
}

func kindOwnerPath(cluster string) (string, error) {
	d, err := kindOwnerDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, cluster+".json"), nil
}

// writeKindOwner records this process as the creator of cluster.
func writeKindOwner(cluster, kubeconfig string) error {
	p, err := kindOwnerPath(cluster)
	if err != nil {
		return err
	}
	self, err := procfs.Stat(os.Getpid())
	if err != nil {
		return fmt.Errorf("kind: owner record: %v", err)
	}
	b, _ := json.Marshal(KindOwner{Cluster: cluster, Pid: os.Getpid(), PidStart: self.Start, Kubeconfig: kubeconfig, Created: time.Now()})
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("kind: owner record: %v", err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("kind: owner record: %v", err)
	}
	return nil
}

// ReadKindOwner returns the owner record of cluster (nil if there is none)
// and whether its run is still alive.
func ReadKindOwner(cluster string) (*KindOwner, bool, error) {
	p, err := kindOwnerPath(cluster)
	if err != nil {
		return nil, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kind: owner record %s: %v", p, err)
	}
	var o KindOwner
	if err := json.Unmarshal(b, &o); err != nil || o.Pid <= 0 {
		// Unreadable: nobody can claim the cluster through it.
		return &o, false, nil
	}
	return &o, procfs.Alive(o.Pid, o.PidStart), nil
}

// removeKindOwner forgets the record of cluster.
func removeKindOwner(cluster string) {
	if p, err := kindOwnerPath(cluster); err == nil {
		os.Remove(p)
	}
}
