// Package inpod is the node agent ↔ node proxy protocol of the reference
// ambient data plane, modelled on the one between istio-cni and ztunnel in
// "in-pod" mode, plus the redirect rules the agent installs in each pod.
//
// The node agent (Server) listens on a unix SOCK_SEQPACKET socket; node
// proxies (Connect, Run) dial it. One JSON message per packet:
//
//	agent → proxy  {"type":"add","uid":"ns/pod","workload":{...}}   + the pod's netns fd (SCM_RIGHTS)
//	agent → proxy  {"type":"del","uid":"ns/pod"}
//	agent → proxy  {"type":"snapshot-sent"}
//	proxy → agent  {"type":"ack","error":""}                         (non-empty error: rejected)
//
// Every agent message is answered by exactly one ack, and the agent sends the
// next message to a proxy only after the previous one was acked, so acks need
// no id. A newly connected proxy first receives an add for every current pod
// and then snapshot-sent: anything it held that the snapshot did not mention
// is gone. During a graceful restart the old and the new proxy are connected
// at once, and each receives every message.
//
// The workload is opaque to this package: whatever JSON the agent supplies is
// handed to the proxy as is.
package inpod

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Message types on the wire.
const (
	TypeAdd          = "add"
	TypeDel          = "del"
	TypeSnapshotSent = "snapshot-sent"
	TypeAck          = "ack"
)

// maxMessage bounds one packet (the workload included). A packet that does
// not fit is truncated by the kernel; the proxy then NACKs it rather than
// acting on half a message.
const maxMessage = 1 << 20

// maxFDs is how many descriptors a proxy makes room for in one packet. Only
// one is ever legitimate; room for more lets it notice and close extras
// instead of having the kernel truncate the control data silently.
const maxFDs = 8

// request is an agent → proxy message.
type request struct {
	Type     string          `json:"type"`
	UID      string          `json:"uid,omitempty"`
	Workload json.RawMessage `json:"workload,omitempty"`
}

// ack is a proxy → agent message. Error is always present on the wire.
type ack struct {
	Type  string `json:"type"`
	Error string `json:"error"`
}

// checkNetNS reports whether fd refers to a network namespace, so a stray
// descriptor is refused at the boundary instead of failing later in setns.
func checkNetNS(fd int) error {
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("fd %d is not a namespace: %w", fd, err)
	}
	if t != unix.CLONE_NEWNET {
		return fmt.Errorf("fd %d is a namespace of type %#x, not a network namespace", fd, t)
	}
	return nil
}

// decodeAck decodes one proxy → agent packet, which must be an ack. The
// NACK reason is made one line: the agent prints it in NackError, one error
// per log line, and a proxy must not be able to forge log lines.
func decodeAck(pkt []byte, flags int) (ack, error) {
	if flags&unix.MSG_TRUNC != 0 {
		return ack{}, errors.New("oversized packet")
	}
	var a ack
	if err := json.Unmarshal(pkt, &a); err != nil {
		return ack{}, fmt.Errorf("not an ack: %s", oneLine(err.Error()))
	}
	if a.Type != TypeAck {
		return ack{}, fmt.Errorf("not an ack: type %q", a.Type)
	}
	a.Error = oneLine(a.Error)
	return a, nil
}

// oneLine escapes line breaks so that s prints as one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}
