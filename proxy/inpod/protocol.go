// Package inpod is the node agent ↔ node proxy protocol of the ambient data
// plane — ZDS, the one istio-cni speaks to ztunnel in "in-pod" mode, with
// Istio's own message types (istio.io/istio/pkg/zdsapi) — plus the redirect
// rules the agent installs in each pod.
//
// The node agent (Server) listens on a unix SOCK_SEQPACKET socket; node
// proxies (Connect, Run) dial it. One protobuf message per packet:
//
//	proxy → agent  ZdsHello{version: V1}                          first, once per connection
//	agent → proxy  WorkloadRequest{add: {uid, workload_info}}     + the pod's netns fd (SCM_RIGHTS)
//	agent → proxy  WorkloadRequest{keep: {uid}}                   snapshot only: keep a pod the agent has no netns for
//	agent → proxy  WorkloadRequest{del: {uid}}
//	agent → proxy  WorkloadRequest{snapshot_sent: {}}
//	proxy → agent  WorkloadResponse{ack: {error}}                 (non-empty error: rejected)
//
// Every agent message is answered by exactly one ack, and the agent sends the
// next message to a proxy only after the previous one was acked, so acks need
// no id; a proxy sends nothing else, and the agent drops one that does. A
// newly connected proxy first receives an add (or keep) for every current pod
// and then snapshot_sent: anything it held that the snapshot did not mention
// is gone. As in istio-cni, a pod added later goes to the newest connected
// proxy only and a delete goes to every one: during a graceful restart the
// old proxy serves what it has until it drains, and the new one takes over.
//
// Pods are keyed by uid (on Kubernetes the pod's UID). The workload info
// names the pod and its service account; it carries no address, and a proxy
// learns the pod's IP from the pod's namespace or from its configuration.
package inpod

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/internal/oneline"
)

// maxMessage bounds one agent packet. A packet that does not fit is
// truncated by the kernel; the proxy then NACKs it rather than acting on half
// a message. Real requests are a few hundred bytes.
const maxMessage = 64 << 10

// maxAck is the largest answer a proxy may send: istio-cni reads acks (and
// the hello) into a 1024-byte buffer and treats a longer one as truncated.
const maxAck = 1024

// maxFDs is how many descriptors a proxy makes room for in one packet. Only
// one is ever legitimate; room for more lets it notice and close extras
// instead of having the kernel truncate the control data silently.
const maxFDs = 8

// Kinds of agent message, as the proxy's errors and logs name them.
const (
	KindAdd          = "add"
	KindKeep         = "keep"
	KindDel          = "del"
	KindSnapshotSent = "snapshot_sent"
)

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

// helloPacket is what a proxy sends first.
func helloPacket() []byte {
	b, _ := proto.Marshal(&zdsapi.ZdsHello{Version: zdsapi.Version_V1})
	return b
}

// decodeHello decodes a proxy's first packet.
func decodeHello(pkt []byte, flags int) error {
	if flags&unix.MSG_TRUNC != 0 {
		return errors.New("oversized hello")
	}
	var h zdsapi.ZdsHello
	if err := proto.Unmarshal(pkt, &h); err != nil {
		return fmt.Errorf("not a hello: %s", oneline.Escape(err.Error()))
	}
	if h.Version != zdsapi.Version_V1 {
		return fmt.Errorf("hello with version %v, want V1", h.Version)
	}
	return nil
}

// ackPacket encodes an answer. A NACK's reason is cut so that the packet fits
// in maxAck bytes: a longer one would be read as truncated and the whole
// connection dropped over an error message.
func ackPacket(reason string) []byte {
	// Protobuf strings must be UTF-8: the agent refuses an ack that is not
	// (and drops the proxy), so a handler error quoting raw bytes is
	// mended here.
	reason = oneline.Escape(strings.ToValidUTF8(reason, "\uFFFD"))
	for {
		b, _ := proto.Marshal(&zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{Error: reason}}})
		if len(b) <= maxAck {
			return b
		}
		// Cut on a rune boundary so the string stays valid UTF-8
		// (protobuf refuses to marshal anything else).
		cut := len(reason) - (len(b) - maxAck) - len("…")
		for cut > 0 && !utf8Start(reason[cut]) {
			cut--
		}
		reason = reason[:max(cut, 0)] + "…"
	}
}

func utf8Start(b byte) bool { return b&0xc0 != 0x80 }

// decodeAck decodes one proxy → agent packet, which must be an ack. The
// NACK reason is made one line: the agent prints it in NackError, one error
// per log line, and a proxy must not be able to forge log lines.
func decodeAck(pkt []byte, flags int) (reason string, err error) {
	if flags&unix.MSG_TRUNC != 0 {
		return "", errors.New("oversized packet")
	}
	var r zdsapi.WorkloadResponse
	if err := proto.Unmarshal(pkt, &r); err != nil {
		return "", fmt.Errorf("not an ack: %s", oneline.Escape(err.Error()))
	}
	a := r.GetAck()
	if a == nil {
		return "", errors.New("not an ack: empty response")
	}
	return oneline.Escape(a.GetError()), nil
}

// requestPacket encodes an agent message. Only invalid UTF-8 in a string
// field fails, and the server checks uids and workload info before it
// stores them.
func requestPacket(r *zdsapi.WorkloadRequest) ([]byte, error) {
	return proto.Marshal(r)
}

func addRequest(uid string, info *zdsapi.WorkloadInfo) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid, WorkloadInfo: info}}}
}

func keepRequest(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}}
}

func delRequest(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}}
}

func snapshotSentRequest() *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}
}
