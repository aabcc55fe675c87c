package localk8s

import (
	"os/exec"
	"slices"
	"testing"
	"time"
)

// down finds processes Up started but never recorded (Up killed half-way)
// by the cluster directory on their command line; a user's process that
// merely names a file there (make's shell, tail -f of a log) must survive.
func TestClusterProcsSparesProcessesThatOnlyNameTheDirectory(t *testing.T) {
	dir := t.TempDir()
	bystander := exec.Command("sh", "-c", "sleep 30; : "+dir+"/logs/kubelet.log")
	started := exec.Command("sh", "-c", "sleep 30; true", "sh", dir+"/pki/ca.crt")
	started.Dir = dir // as startHostProc runs the control plane
	for _, c := range []*exec.Cmd{bystander, started} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { c.Process.Kill(); c.Wait() }()
	}
	time.Sleep(100 * time.Millisecond) // let sh exec
	got := clusterProcs(state{}, dir, map[uint64]bool{})
	if slices.Contains(got, bystander.Process.Pid) {
		t.Errorf("down would kill a bystander naming the directory (pid %d)", bystander.Process.Pid)
	}
	if !slices.Contains(got, started.Process.Pid) {
		t.Errorf("down would miss a process running in the cluster directory (pid %d); found %v", started.Process.Pid, got)
	}
}
