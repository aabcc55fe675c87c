package main

import (
	"bytes"
	"strings"
	"testing"

	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/node"
)

// The node agent's defaults are the node proxy's: the mark the redirect
// rules let through is the one the proxy sets on its own sockets, and the
// socket is the one the proxy dials (and the embedded provider listens on).
func TestNodeAgentDefaultsMatchTheProxy(t *testing.T) {
	if inpod.DefaultProxyMark != node.DefaultMark {
		t.Errorf("inpod.DefaultProxyMark %#x, node.DefaultMark %#x", inpod.DefaultProxyMark, node.DefaultMark)
	}
	if inpod.DefaultSocket != dataplane.InpodSocket {
		t.Errorf("inpod.DefaultSocket %q, dataplane.InpodSocket %q", inpod.DefaultSocket, dataplane.InpodSocket)
	}
	var out, errb bytes.Buffer
	node.Main([]string{"--help"}, &out, &errb)
	if !strings.Contains(out.String()+errb.String(), `(default "`+inpod.DefaultSocket+`")`) {
		t.Errorf("the proxy's --inpod default is not %s:\n%s", inpod.DefaultSocket, errb.String())
	}
}

func TestNodeAgentCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"node-agent", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-netns-dir") {
		t.Errorf("--help: exit %d, %q", code, errb.String())
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"node-agent"}, "blastradius node-agent: --node is required"},
		{[]string{"node-agent", "--node", "w1", "--mark", "-1"}, "invalid value"},
		{[]string{"node-agent", "--node", "w1", "--netns-dir", "/nonexistent"}, "--netns-dir /nonexistent: not a directory"},
	} {
		out.Reset()
		errb.Reset()
		code := dispatch(c.args, &out, &errb)
		if code != 2 || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, errb.String(), c.want)
		}
	}
}
