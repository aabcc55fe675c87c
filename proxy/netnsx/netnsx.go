// Package netnsx creates sockets inside network namespaces held by file
// descriptor, for a node proxy that serves many pods from one process (as
// ztunnel's in-pod mode does): the proxy receives each pod's netns fd from the
// node agent and opens its listeners and outbound sockets inside it.
//
// A network namespace belongs to a thread, not to a process, and a socket
// belongs to the namespace of the thread that created it, for life. So only
// socket creation needs to run "inside": the returned sockets are ordinary
// net.Conn and net.Listener values usable from any goroutine.
//
// Every switch runs on a fresh goroutine that locks its OS thread, enters the
// namespace, does the work, and switches back. If switching back fails, the
// thread is left locked: the goroutine then exits and the Go runtime destroys
// the thread instead of reusing one that sits in the wrong namespace. Using a
// separate goroutine means the caller's own goroutine (and whatever it has
// locked) is never affected, even in that failure case.
//
// Only IPv4 is handled, matching the reference data plane: SO_ORIGINAL_DST is
// IPv4-only and the redirect rules are in an nftables "ip" family table.
package netnsx

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// selfNS is the path of the calling thread's own network namespace. It must
// be thread-self, not self: /proc/self/ns/net names the main thread's
// namespace, which is not necessarily the one of the thread we run on.
const selfNS = "/proc/thread-self/ns/net"

// Do runs fn on a thread inside the network namespace nsFD, and returns fn's
// error (or the error of entering or leaving the namespace). nsFD < 0 runs fn
// in the caller's namespace, without switching. fn must not start goroutines
// that expect to be inside the namespace: they run on other threads.
func Do(nsFD int, fn func() error) error {
	if nsFD < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No deferred UnlockOSThread: when restoring fails we return while
		// still locked, and the runtime kills the thread with this goroutine.
		orig, err := unix.Open(selfNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnsx: open current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		// Already there (a sidecar proxy given its own pod's namespace):
		// run in place. setns needs CAP_SYS_ADMIN even to enter the
		// namespace one is in, and a sidecar container on Kubernetes has
		// NET_ADMIN at most.
		if sameNS(orig, nsFD) {
			runtime.UnlockOSThread()
			errc <- fn()
			return
		}
		if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnsx: enter netns fd %d: %w", nsFD, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netnsx: restore netns: %w (thread discarded)", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// sameNS reports whether two namespace descriptors name one namespace
// (same nsfs device and inode).
func sameNS(a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// NewNS creates an empty network namespace (only a down loopback) and returns
// a descriptor holding it. The namespace lives until the descriptor, and every
// socket and process in it, are gone. The caller owns fd.
func NewNS() (fd int, err error) {
	fd = -1
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(selfNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnsx: open current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		// unshare moves only this thread into the new namespace.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnsx: unshare netns: %w", err)
			return
		}
		nfd, openErr := unix.Open(selfNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			if openErr == nil {
				unix.Close(nfd)
			}
			errc <- fmt.Errorf("netnsx: restore netns: %w (thread discarded)", err)
			return
		}
		runtime.UnlockOSThread()
		if openErr != nil {
			errc <- fmt.Errorf("netnsx: open new netns: %w", openErr)
			return
		}
		fd = nfd
		errc <- nil
	}()
	err = <-errc
	return fd, err
}

// ListenOptions are socket options set on a listener before bind.
type ListenOptions struct {
	// ReusePort sets SO_REUSEPORT, so that several listeners (for instance
	// the old and the new proxy during a graceful restart) share a port.
	ReusePort bool
	// Transparent sets IP_TRANSPARENT, to accept connections addressed to
	// non-local addresses (TPROXY-style interception).
	Transparent bool
	// Mark sets SO_MARK on the listening socket when non-zero.
	Mark uint32
}

// ListenTCP listens on the IPv4 address addr ("ip:port"; an empty host means
// 0.0.0.0) inside the network namespace nsFD (< 0: the caller's own).
//
// The host must be an IP literal: resolving a name could run on another
// thread, in another namespace, and ask another namespace's resolver.
func ListenTCP(nsFD int, addr string, opts ListenOptions) (net.Listener, error) {
	ap, err := parseAddr(addr, true)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			s := int(fd)
			if opts.ReusePort {
				if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
					serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
					return
				}
			}
			if opts.Transparent {
				if serr = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_TRANSPARENT, 1); serr != nil {
					serr = fmt.Errorf("IP_TRANSPARENT: %w", serr)
					return
				}
			}
			if opts.Mark != 0 {
				if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_MARK, int(opts.Mark)); serr != nil {
					serr = fmt.Errorf("SO_MARK: %w", serr)
				}
			}
		})
		return errors.Join(err, serr)
	}}
	var ln net.Listener
	// Go's Listen creates, configures, binds and listens synchronously on the
	// calling goroutine, so all of it happens on the switched thread. "tcp4":
	// for 0.0.0.0, "tcp" would make a dual-stack IPv6 socket, on which the
	// IPv4 options and SO_ORIGINAL_DST are not what the proxy wants.
	err = Do(nsFD, func() error {
		var lerr error
		ln, lerr = lc.Listen(context.Background(), "tcp4", ap.String())
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("netnsx: listen %s in netns fd %d: %w", addr, nsFD, err)
	}
	return ln, nil
}

// DialTCP connects to the IPv4 address addr ("ip:port") from a socket created
// inside the network namespace nsFD (< 0: the caller's own). A non-zero mark
// is set as SO_MARK before connecting, so the pod's redirect rules, which skip
// that mark, let the proxy's own traffic through. timeout > 0 bounds the
// connect in addition to ctx.
//
// Only socket creation runs on the switched thread: the socket is made there
// (non-blocking), the thread goes back at once, and the connect is started and
// awaited through Go's poller from the caller's goroutine. A slow or
// black-holed connect therefore never pins an OS thread in the pod namespace.
func DialTCP(ctx context.Context, nsFD int, addr string, mark uint32, timeout time.Duration) (net.Conn, error) {
	ap, err := parseAddr(addr, false)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, dialErr(addr, nsFD, err)
	}
	fd := -1
	err = Do(nsFD, func() error {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		fd = s
		return nil
	})
	if err != nil {
		return nil, dialErr(addr, nsFD, err)
	}
	c, err := connect(ctx, fd, ap, mark)
	if err != nil {
		return nil, dialErr(addr, nsFD, err)
	}
	return c, nil
}

func dialErr(addr string, nsFD int, err error) error {
	return fmt.Errorf("netnsx: dial %s from netns fd %d: %w", addr, nsFD, err)
}

// connect takes ownership of the non-blocking socket fd and connects it.
func connect(ctx context.Context, fd int, ap netip.AddrPort, mark uint32) (net.Conn, error) {
	if mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("SO_MARK: %w", err)
		}
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	inProgress := false
	switch err := unix.Connect(fd, sa); err {
	case nil:
	case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
		inProgress = true
	default:
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	// The os.File registers the non-blocking fd with the runtime poller, so
	// the wait below parks the goroutine, not a thread, and honours deadlines.
	f := os.NewFile(uintptr(fd), "netnsx-dial")
	defer f.Close() // net.FileConn below works on a dup
	if inProgress {
		if err := waitConnected(ctx, f); err != nil {
			return nil, err
		}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// waitConnected waits until the connect started on f completes, fails, or ctx
// ends.
func waitConnected(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	// Only ctx ends the wait (its deadline included): by the time AfterFunc
	// runs ctx.Err() is set, so the caller gets context.DeadlineExceeded or
	// context.Canceled rather than a poller timeout.
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		// Called once at once, then each time the socket becomes writable.
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := syscall.Errno(soerr); e {
		case 0, unix.EISCONN:
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			cerr = os.NewSyscallError("connect", e)
			return true
		}
		// No pending error: connected if it has a peer, else still going.
		if _, err := unix.Getpeername(int(fd)); err != nil {
			return false
		}
		return true
	})
	if werr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return werr
	}
	return cerr
}

// parseAddr parses "ip:port" (IPv4 only); with emptyHost an empty host means
// 0.0.0.0.
func parseAddr(addr string, emptyHost bool) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netnsx: address %q: %w", addr, err)
	}
	if host == "" && emptyHost {
		host = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netnsx: address %q: host must be an IP literal", addr)
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return netip.AddrPort{}, fmt.Errorf("netnsx: address %q: only IPv4 is supported", addr)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil || p < 0 || p > 65535 {
		return netip.AddrPort{}, fmt.Errorf("netnsx: address %q: bad port", addr)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// OriginalDst returns the destination a connection had before an nftables
// REDIRECT or DNAT rewrote it, from conntrack (getsockopt SO_ORIGINAL_DST).
// For a connection that was not rewritten it returns the local address. c
// must be an IPv4 TCP connection exposing its socket (syscall.Conn).
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("netnsx: original destination: %T has no socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netnsx: original destination: %w", err)
	}
	var sa unix.RawSockaddrInet4
	var serr error
	err = rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(sa))
		// x/sys has no getsockopt returning a sockaddr_in, hence the raw call.
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = os.NewSyscallError("getsockopt SO_ORIGINAL_DST", e)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		// ENOENT: no conntrack entry (conntrack not loaded in that netns,
		// or not IPv4).
		return netip.AddrPort{}, fmt.Errorf("netnsx: original destination: %w", err)
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("netnsx: original destination: family %d, want AF_INET", sa.Family)
	}
	// sin_port is in network byte order.
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

// SetSysctl writes a per-network-namespace sysctl inside nsFD (< 0: the
// caller's own), for example SetSysctl(fd, "net.ipv4.tcp_migrate_req", "1").
// name is dotted ("net.ipv4.ip_forward") or a path under /proc/sys
// ("net/ipv4/conf/eth0.1/rp_filter", for names that contain dots). Only
// net.* is accepted: other sysctls are not per namespace, and writing one
// "inside" a pod would change the whole node.
func SetSysctl(nsFD int, name, value string) error {
	p := name
	if !strings.Contains(p, "/") {
		p = strings.ReplaceAll(p, ".", "/")
	}
	if !strings.HasPrefix(p, "net/") || strings.Contains(p, "..") {
		return fmt.Errorf("netnsx: sysctl %q: only net.* sysctls are per network namespace", name)
	}
	// /proc/sys/net resolves to the namespace of the thread that opens it.
	err := Do(nsFD, func() error {
		return os.WriteFile("/proc/sys/"+p, []byte(value), 0o644)
	})
	if err != nil {
		return fmt.Errorf("netnsx: sysctl %s=%s in netns fd %d: %w", name, value, nsFD, err)
	}
	return nil
}

// PodIP returns a pod's address, read from its network namespace: the one
// global unicast IPv4 address on an interface other than loopback. The node
// agent's add names the pod but carries no address (istio-cni's does not
// either), and the proxy needs it to listen and to find the pod's identity.
// Several candidates are an error rather than a guess: serving a pod under
// the wrong address would give it another workload's identity.
func PodIP(nsFD int) (netip.Addr, error) {
	var found []netip.Addr
	err := Do(nsFD, func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				return fmt.Errorf("addresses of %s: %w", ifc.Name, err)
			}
			for _, a := range addrs {
				ipn, ok := a.(*net.IPNet)
				if !ok {
					continue
				}
				ip, ok := netip.AddrFromSlice(ipn.IP)
				if !ok {
					continue
				}
				ip = ip.Unmap()
				if ip.Is4() && ip.IsGlobalUnicast() {
					found = append(found, ip)
				}
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("pod address: %w", err)
	case len(found) == 0:
		return netip.Addr{}, errors.New("pod address: no IPv4 address in the pod's network namespace")
	case len(found) > 1:
		return netip.Addr{}, fmt.Errorf("pod address: several IPv4 addresses in the pod's network namespace %v", found)
	}
	return found[0], nil
}
