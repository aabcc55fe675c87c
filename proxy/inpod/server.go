package inpod

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/zdsapi"
)

// ErrClosed is returned by a Server's methods after Close.
var ErrClosed = errors.New("inpod: server closed")

// DefaultAckTimeout is how long the server waits for a proxy's ack.
const DefaultAckTimeout = 5 * time.Second

// Server is the node agent's side: it remembers the node's pods and pushes
// them to the node proxies, as istio-cni's ztunnel server does: every proxy
// that connects gets a snapshot of all of them, a pod added later goes to the
// newest proxy, and a delete goes to every proxy.
//
// One mutex serialises every state change and every exchange with proxies:
// a proxy that connects while an Add is in flight gets its snapshot after the
// Add (and so sees the pod), never a mix, and each proxy sees messages in the
// order the agent issued them. The price is that one slow proxy delays the
// agent by at most the ack timeout per message, after which it is dropped.
type Server struct {
	ln         *net.UnixListener
	ackTimeout time.Duration
	logf       func(format string, args ...any)
	initial    []Pod

	mu      sync.Mutex
	pods    map[string]*pod
	proxies map[*peer]struct{} // connected and through their snapshot
	conns   map[*peer]struct{} // every connection, for Close
	nextID  int
	closed  bool

	wg sync.WaitGroup
}

type pod struct {
	fd   int // the server's own dup (the caller keeps its descriptor); -1: none, sent as keep
	info *zdsapi.WorkloadInfo
}

// ServerOption configures NewServer.
type ServerOption func(*Server)

// WithAckTimeout sets how long a proxy has to ack a message (default
// DefaultAckTimeout). A proxy that misses it is disconnected: a late ack would
// otherwise be taken for the answer to the next message.
func WithAckTimeout(d time.Duration) ServerOption { return func(s *Server) { s.ackTimeout = d } }

// WithLogf receives events no method call can return: a proxy that NACKed or
// timed out during its snapshot, a proxy dropped for breaking the protocol.
func WithLogf(f func(format string, args ...any)) ServerOption {
	return func(s *Server) { s.logf = f }
}

// Pod is a pod a server knows from the start (WithPods).
type Pod struct {
	UID string
	// NetNSFD is the pod's network namespace; the caller keeps ownership
	// and the server keeps a duplicate. A negative value means the agent
	// knows the pod but could not open its namespace (a restarted agent
	// whose pod's netns file is gone): the snapshot then says keep, and a
	// proxy that has the pod keeps serving it.
	NetNSFD  int
	Workload *zdsapi.WorkloadInfo
}

// WithPods makes the server know these pods before it accepts its first
// proxy, as if added with Add. A restarted node agent needs it: istio-cni
// rebuilds its pod set before it lets ztunnel connect, and a proxy that
// connected to an agent still adding its pods would take the empty snapshot
// to mean they were all deleted.
func WithPods(pods ...Pod) ServerOption {
	return func(s *Server) { s.initial = append(s.initial, pods...) }
}

// NewServer listens on the unix SOCK_SEQPACKET socket path. A stale socket
// left at path by a previous agent is replaced; a socket another server still
// accepts on, or any other file, is an error. Close removes the socket.
func NewServer(path string, opts ...ServerOption) (*Server, error) {
	s := &Server{
		ackTimeout: DefaultAckTimeout,
		logf:       func(string, ...any) {},
		pods:       map[string]*pod{},
		proxies:    map[*peer]struct{}{},
		conns:      map[*peer]struct{}{},
	}
	for _, o := range opts {
		o(s)
	}
	for _, ip := range s.initial {
		p, err := newPod(ip.UID, ip.NetNSFD, ip.Workload)
		if err != nil {
			for _, q := range s.pods {
				unix.Close(q.fd)
			}
			return nil, err
		}
		if old := s.pods[ip.UID]; old != nil {
			unix.Close(old.fd)
		}
		s.pods[ip.UID] = p
	}
	s.initial = nil
	fail := func(err error) (*Server, error) {
		for _, q := range s.pods {
			unix.Close(q.fd)
		}
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fail(fmt.Errorf("inpod: %s exists and is not a socket", path))
		}
		// Left by an agent that died, unless one still answers there:
		// unlinking a live agent's socket would orphan its proxies.
		if c, err := net.DialTimeout("unixpacket", path, time.Second); err == nil {
			c.Close()
			return fail(fmt.Errorf("inpod: another node agent is listening on %s", path))
		}
		if err := os.Remove(path); err != nil {
			return fail(fmt.Errorf("inpod: remove stale socket: %w", err))
		}
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return fail(fmt.Errorf("inpod: listen: %w", err))
	}
	// Whoever connects is sent every pod's network namespace: owner only.
	// bind(2) leaves the file at 0777 minus the umask, which may let other
	// users connect. (An abstract socket, the default, has no file: it is
	// reachable only from the network namespace it was bound in, the node
	// proxy pod's.)
	if !strings.HasPrefix(path, "@") {
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return fail(fmt.Errorf("inpod: restrict socket: %w", err))
		}
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Add remembers the pod uid with its network namespace nsFD and workload, and
// sends it to the newest connected proxy (the one a graceful restart hands
// the node to), waiting for its ack. The server keeps a duplicate of nsFD:
// the caller keeps ownership of its descriptor. Adding a uid again replaces
// it (and resends it). The pod is remembered even if the proxy rejects it;
// the error then names the proxy that NACKed or did not answer in time.
func (s *Server) Add(uid string, nsFD int, info *zdsapi.WorkloadInfo) error {
	if nsFD < 0 {
		return fmt.Errorf("inpod: add %s: no network namespace", uid)
	}
	p, err := newPod(uid, nsFD, info)
	if err != nil {
		return err
	}
	dup := p.fd
	msg, err := requestPacket(addRequest(uid, p.info))
	if err != nil {
		unix.Close(dup)
		return fmt.Errorf("inpod: add %s: %w", uid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		unix.Close(dup)
		return ErrClosed
	}
	if old := s.pods[uid]; old != nil && old.fd >= 0 {
		unix.Close(old.fd)
	}
	s.pods[uid] = p
	var newest *peer
	for q := range s.proxies {
		if newest == nil || q.id > newest.id {
			newest = q
		}
	}
	if newest == nil {
		return nil
	}
	if err := s.exchange(newest, msg, dup); err != nil {
		var gone goneError
		if errors.As(err, &gone) {
			return nil // it gets the pod in its snapshot when it reconnects
		}
		return fmt.Errorf("inpod: add %s: %w", uid, err)
	}
	return nil
}

// newPod checks a pod and takes a duplicate of its namespace descriptor (a
// negative nsFD: a pod kept without one).
func newPod(uid string, nsFD int, info *zdsapi.WorkloadInfo) (*pod, error) {
	if uid == "" {
		return nil, errors.New("inpod: add: empty uid")
	}
	// Protobuf strings must be UTF-8; checked here so that sending never
	// fails on a pod the server already accepted.
	if !utf8.ValidString(uid) {
		return nil, fmt.Errorf("inpod: add %q: uid is not UTF-8", uid)
	}
	if info != nil && !(utf8.ValidString(info.GetName()) && utf8.ValidString(info.GetNamespace()) && utf8.ValidString(info.GetServiceAccount())) {
		return nil, fmt.Errorf("inpod: add %s: workload info is not UTF-8", uid)
	}
	if info != nil {
		info = proto.Clone(info).(*zdsapi.WorkloadInfo)
	}
	if nsFD < 0 {
		return &pod{fd: -1, info: info}, nil
	}
	if err := checkNetNS(nsFD); err != nil {
		return nil, fmt.Errorf("inpod: add %s: %w", uid, err)
	}
	dup, err := unix.FcntlInt(uintptr(nsFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("inpod: add %s: dup netns fd: %w", uid, err)
	}
	return &pod{fd: dup, info: info}, nil
}

// Del forgets the pod uid and tells every connected proxy, waiting for their
// acks. Deleting an unknown uid does nothing and succeeds, so that the agent
// can retry a delete blindly.
func (s *Server) Del(uid string) error {
	msg, err := requestPacket(delRequest(uid))
	if err != nil {
		return fmt.Errorf("inpod: del %q: %w", uid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	p := s.pods[uid]
	if p == nil {
		return nil
	}
	if p.fd >= 0 {
		unix.Close(p.fd)
	}
	delete(s.pods, uid)
	if err := s.broadcast(msg, -1); err != nil {
		return fmt.Errorf("inpod: del %s: %w", uid, err)
	}
	return nil
}

// Connected returns how many proxies are connected and have acked their
// snapshot.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.proxies)
}

// Close stops listening, disconnects every proxy, releases the remembered
// namespace descriptors and removes the socket file. Proxies keep the
// descriptors they received.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for p := range s.conns {
		p.conn.Close()
	}
	for uid, p := range s.pods {
		if p.fd >= 0 {
			unix.Close(p.fd)
		}
		delete(s.pods, uid)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// broadcast sends msg (with fd when >= 0) to every proxy in parallel and
// waits for their answers. A proxy that disconnected is dropped silently; one
// that timed out is dropped and reported; one that NACKed stays and is
// reported. s.mu is held.
func (s *Server) broadcast(msg []byte, fd int) error {
	errs := make([]error, 0, len(s.proxies))
	var emu sync.Mutex
	var wg sync.WaitGroup
	for p := range s.proxies {
		wg.Go(func() {
			if err := s.exchange(p, msg, fd); err != nil {
				var gone goneError
				if errors.As(err, &gone) {
					return
				}
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	// Sorted, so the same failures always read the same.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// goneError marks a proxy that disconnected by itself: not the agent's
// problem, the proxy will reconnect and get a snapshot.
type goneError struct{ p *peer }

func (e goneError) Error() string { return e.p.String() + " disconnected" }

// NackError is a proxy's rejection of a message.
type NackError struct {
	Proxy  string // as in "proxy 2 (pid 1234)"
	Reason string // the ack's error field
}

func (e *NackError) Error() string { return e.Proxy + " rejected it: " + e.Reason }

// exchange sends one message to p and waits for its ack. Any failure other
// than a NACK leaves the stream out of step, so p is disconnected.
func (s *Server) exchange(p *peer, msg []byte, fd int) error {
	p.mu.Lock()
	p.waiting = true
	p.mu.Unlock()
	deadline := time.Now().Add(s.ackTimeout)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	p.conn.SetWriteDeadline(deadline)
	if _, _, err := p.conn.WriteMsgUnix(msg, oob, nil); err != nil {
		p.conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%s: send timed out after %v", p, s.ackTimeout)
		}
		select {
		case <-p.done:
		default:
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s: send: %w", p, err)
			}
		}
		return goneError{p}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case reason := <-p.acks:
		if reason != "" {
			return &NackError{Proxy: p.String(), Reason: reason}
		}
		return nil
	case <-p.done:
		return goneError{p}
	case <-t.C:
		p.conn.Close()
		return fmt.Errorf("%s: no ack within %v (disconnected)", p, s.ackTimeout)
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (EMFILE and the like): do not spin.
			s.logf("inpod: accept: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.nextID++
		p := &peer{id: s.nextID, pid: peerPID(c), conn: c, acks: make(chan string, 1), done: make(chan struct{})}
		s.conns[p] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.readLoop(p)
	}
}

// greet sends p every current pod then snapshot-sent, and only then makes it
// a member: under s.mu, so no Add or Del can slip between the snapshot and the
// membership.
func (s *Server) greet(p *peer) {
	defer s.wg.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		p.conn.Close()
		return
	}
	uids := make([]string, 0, len(s.pods))
	for uid := range s.pods {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	for _, uid := range uids {
		pd := s.pods[uid]
		req := addRequest(uid, pd.info)
		if pd.fd < 0 {
			req = keepRequest(uid)
		}
		msg, err := requestPacket(req)
		if err == nil {
			err = s.exchange(p, msg, pd.fd)
		}
		var nack *NackError
		switch {
		case errors.As(err, &nack):
			s.logf("inpod: snapshot add %s: %v", uid, err)
		case err != nil:
			s.logf("inpod: snapshot to %s: %v", p, err)
			p.conn.Close()
			return
		}
	}
	msg, _ := requestPacket(snapshotSentRequest())
	if err := s.exchange(p, msg, -1); err != nil {
		var nack *NackError
		if !errors.As(err, &nack) {
			s.logf("inpod: snapshot to %s: %v", p, err)
			p.conn.Close()
			return
		}
		s.logf("inpod: snapshot-sent: %v", err)
	}
	select {
	case <-p.done: // hung up meanwhile
		return
	default:
	}
	s.proxies[p] = struct{}{}
}

// readLoop waits for p's hello, starts its snapshot, then delivers its acks
// to the exchange waiting for them, and removes p when its connection ends.
func (s *Server) readLoop(p *peer) {
	defer s.wg.Done()
	defer func() {
		p.conn.Close()
		close(p.done) // first: an exchange holding s.mu must not wait for us
		s.mu.Lock()
		delete(s.proxies, p)
		delete(s.conns, p)
		s.mu.Unlock()
	}()
	buf := make([]byte, maxAck)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	// A proxy speaks first, and within the ack timeout (istio-cni gives
	// ztunnel 5 s): one that never does holds nothing of ours.
	_ = p.conn.SetReadDeadline(time.Now().Add(s.ackTimeout))
	n, oobn, flags, _, err := p.conn.ReadMsgUnix(buf, oob)
	if err != nil || n == 0 {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.logf("inpod: %s sent no hello within %v; disconnecting", p, s.ackTimeout)
		}
		return
	}
	closeFDs(oob[:oobn])
	if err := decodeHello(buf[:n], flags); err != nil {
		s.logf("inpod: %s: %v; disconnecting", p, err)
		return
	}
	_ = p.conn.SetReadDeadline(time.Time{})
	s.wg.Add(1)
	go s.greet(p)
	for {
		n, oobn, flags, _, err := p.conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 { // 0: orderly shutdown on SOCK_SEQPACKET
			return
		}
		closeFDs(oob[:oobn]) // a proxy has no business sending descriptors
		a, err := decodeAck(buf[:n], flags)
		if err != nil {
			s.logf("inpod: %s sent %q: %v; disconnecting", p, buf[:n], err)
			return
		}
		p.mu.Lock()
		waiting := p.waiting
		p.waiting = false
		p.mu.Unlock()
		if !waiting {
			s.logf("inpod: %s sent an unsolicited ack; disconnecting", p)
			return
		}
		p.acks <- a // buffered: one outstanding message at most
	}
}

// peer is one connected proxy.
type peer struct {
	id   int
	pid  int32 // from SO_PEERCRED; 0 if unknown
	conn *net.UnixConn
	acks chan string   // NACK reasons, "" for an ack
	done chan struct{} // closed when the connection is gone

	mu      sync.Mutex
	waiting bool // a message was sent and its ack not yet received
}

// String names the proxy in errors: the connection number tells apart two
// proxies of one process (tests), the pid two proxies of one node.
func (p *peer) String() string {
	if p.pid > 0 {
		return fmt.Sprintf("proxy %d (pid %d)", p.id, p.pid)
	}
	return fmt.Sprintf("proxy %d", p.id)
}

func peerPID(c *net.UnixConn) int32 {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int32
	rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = cred.Pid
		}
	})
	return pid
}

// closeFDs closes every descriptor carried in the control data oob.
func closeFDs(oob []byte) {
	for _, fd := range parseFDs(oob) {
		unix.Close(fd)
	}
}

// parseFDs returns the descriptors carried in the control data oob.
func parseFDs(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}
