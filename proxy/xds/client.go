package xds

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Client defaults.
const (
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
	DefaultSignTimeout    = 5 * time.Second
)

type clientOptions struct {
	onUpdate       func(Snapshot)
	backoffInitial time.Duration
	backoffMax     time.Duration
	signTimeout    time.Duration
	logf           func(format string, args ...any)
	dialOptions    []grpc.DialOption
}

// ClientOption configures a Client.
type ClientOption func(*clientOptions)

// WithOnUpdate calls f, from the Run goroutine, with every accepted snapshot
// whose content differs from the previous one, before it is ACKed: an ACK
// then means "applied", not just "parsed". f must not block for long, the
// stream is not read meanwhile.
func WithOnUpdate(f func(Snapshot)) ClientOption {
	return func(o *clientOptions) { o.onUpdate = f }
}

// WithBackoff sets the reconnect back-off: initial delay, doubled after each
// failed attempt up to max, each delay jittered by ±20% so proxies restarted
// together do not reconnect in lockstep.
func WithBackoff(initial, max time.Duration) ClientOption {
	return func(o *clientOptions) { o.backoffInitial, o.backoffMax = initial, max }
}

// WithSignTimeout bounds each CreateCertificate call.
func WithSignTimeout(d time.Duration) ClientOption {
	return func(o *clientOptions) { o.signTimeout = d }
}

// WithLogf receives one line per stream loss, NACK and reconnect.
func WithLogf(f func(format string, args ...any)) ClientOption {
	return func(o *clientOptions) { o.logf = f }
}

// WithDialOptions appends grpc.DialOptions (after the defaults, so they win).
func WithDialOptions(opts ...grpc.DialOption) ClientOption {
	return func(o *clientOptions) { o.dialOptions = append(o.dialOptions, opts...) }
}

// Client is a proxy's connection to the control plane: it keeps the last
// accepted snapshot in memory only (a restarted proxy must get fresh state,
// never a stale file) and keeps serving it while the control plane is away.
type Client struct {
	addr string
	node string
	opts clientOptions
	conn *grpc.ClientConn

	running atomic.Bool

	published // mu also guards rootPEM
	rootPEM   []byte
}

// NewClient prepares a client for the control plane at addr (host:port),
// identifying as node. It does not connect; Run does, and Sign connects on
// demand.
//
// The connection is plaintext: the embedded cluster's control-plane link is
// trusted (see Server). Real ztunnel talks to istiod over TLS and proves its
// identity with a service-account JWT.
func NewClient(addr, node string, opts ...ClientOption) (*Client, error) {
	if node == "" {
		return nil, errors.New("xds: empty node name")
	}
	o := clientOptions{
		backoffInitial: DefaultBackoffInitial,
		backoffMax:     DefaultBackoffMax,
		signTimeout:    DefaultSignTimeout,
	}
	for _, f := range opts {
		f(&o)
	}
	if o.backoffInitial <= 0 || o.backoffMax < o.backoffInitial {
		return nil, fmt.Errorf("xds: bad back-off %s..%s", o.backoffInitial, o.backoffMax)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(CodecName)),
		// gRPC's own reconnect back-off defaults to 1s..120s, which would
		// leave a proxy disconnected for minutes after a control plane
		// outage; align it with ours.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  o.backoffInitial,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   o.backoffMax,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		// Without pings a partitioned (silently dropped) link keeps the
		// stream "up" forever and Connected would lie. The server must
		// allow them: see ServerOptions.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	conn, err := grpc.NewClient(addr, append(dial, o.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("xds: control plane address %q: %w", addr, err)
	}
	return &Client{addr: addr, node: node, opts: o, conn: conn, published: newPublished()}, nil
}

func (c *Client) logf(format string, args ...any) {
	if c.opts.logf != nil {
		c.opts.logf(format, args...)
	}
}

// Close releases the connection. Run must have returned (or never run).
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) currentVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return ""
	}
	return c.cur.Version
}

// Run keeps a discovery stream open until ctx ends, reconnecting with
// exponential back-off forever: a proxy must outlive any control plane
// outage. It returns ctx's error. Only one Run at a time: two streams from
// one node would fight over its status at the control plane.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xds: Client.Run called while already running")
	}
	defer c.running.Store(false)
	delay := c.opts.backoffInitial
	for {
		progressed, err := c.runStream(ctx)
		c.setConnected(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			// The stream worked for a while: this is a new outage, not a
			// continuation of the last one.
			delay = c.opts.backoffInitial
		}
		wait := time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
		c.logf("xds: stream to %s ended: %v; reconnecting in %s", c.addr, err, wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, c.opts.backoffMax)
	}
}

// runStream runs one stream; progressed reports whether any response came.
func (c *Client) runStream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.conn.NewStream(ctx, &streamDesc, StreamMethod)
	if err != nil {
		return false, err
	}
	// Report what we still run so the control plane's status is right
	// before the first push is even answered.
	if err := st.SendMsg(&DiscoveryRequest{Node: c.node, VersionInfo: c.currentVersion()}); err != nil {
		return false, err
	}
	c.setConnected(true)
	for {
		var resp DiscoveryResponse
		if err := st.RecvMsg(&resp); err != nil {
			return progressed, err
		}
		progressed = true
		if err := st.SendMsg(c.handle(&resp)); err != nil {
			return progressed, err
		}
	}
}

// handle validates one pushed snapshot and returns the ACK or NACK.
func (c *Client) handle(resp *DiscoveryResponse) *DiscoveryRequest {
	snap := resp.Snapshot
	snap.Version = resp.Version
	err := snap.Validate()
	if err == nil && resp.Version == "" {
		err = errors.New("empty version")
	}
	if err != nil {
		// The version is quoted, the control plane's text on one line.
		reason := fmt.Sprintf("version %q rejected: %v", resp.Version, err)
		c.mu.Lock()
		c.lastNack = reason
		c.mu.Unlock()
		c.logf("xds: NACK %s", reason)
		return &DiscoveryRequest{Node: c.node, VersionInfo: c.currentVersion(), ResponseNonce: resp.Nonce, ErrorDetail: reason}
	}

	c.mu.Lock()
	prev := c.cur
	c.cur = &snap
	c.mu.Unlock()
	// Compare content, not versions: versions restart at v1 when the
	// control plane restarts, so "v1" after a restart may be new content
	// and "v1" after "v7" may be the same content.
	changed := prev == nil || !sameContent(prev, &snap)
	if changed {
		if c.opts.onUpdate != nil {
			c.opts.onUpdate(snap)
		}
		c.push(snap)
	}
	return &DiscoveryRequest{Node: c.node, VersionInfo: snap.Version, ResponseNonce: resp.Nonce}
}

func sameContent(a, b *Snapshot) bool {
	x, y := *a, *b
	x.Version, y.Version = "", ""
	return reflect.DeepEqual(x, y)
}

// Sign asks the control plane's CA for a certificate chain for spiffeID over
// csrDER. It matches ca.Signer, so a proxy can use
// ca.NewCertManager(client.Sign, client.RootPEM).
func (c *Client) Sign(ctx context.Context, csrDER []byte, spiffeID string) ([]byte, error) {
	resp, err := c.CreateCertificate(ctx, &CertificateRequest{CSR: csrDER, Identity: spiffeID})
	if err != nil {
		return nil, err
	}
	return resp.CertChainPEM, nil
}

// CreateCertificate is the raw RPC; it also remembers the returned root for
// RootPEM. Each call has its own short deadline (WithSignTimeout) so a dead
// control plane costs a proxy seconds, not a hung handshake.
func (c *Client) CreateCertificate(ctx context.Context, req *CertificateRequest) (*CertificateResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.signTimeout)
	defer cancel()
	var resp CertificateResponse
	if err := c.conn.Invoke(ctx, CreateCertificateMethod, req, &resp); err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return nil, fmt.Errorf("xds: control plane %s unreachable, cannot sign %s: %w", c.addr, req.Identity, err)
		default:
			return nil, fmt.Errorf("xds: control plane %s refused to sign %s: %w", c.addr, req.Identity, err)
		}
	}
	if len(resp.RootPEM) > 0 {
		c.mu.Lock()
		c.rootPEM = append([]byte(nil), resp.RootPEM...)
		c.mu.Unlock()
	}
	return &resp, nil
}

// RootPEM returns the CA root from the last successful CreateCertificate,
// nil before the first one.
func (c *Client) RootPEM() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rootPEM
}
