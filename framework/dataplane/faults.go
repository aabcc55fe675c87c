package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
)

// nodeIndex parses "node-3".
func nodeIndex(node string) (int, error) {
	var i int
	if _, err := fmt.Sscanf(node, "node-%d", &i); err != nil {
		return 0, fmt.Errorf("%q is not a node name", node)
	}
	return i, nil
}

func (r *Reference) nodeProxy(node string) (string, *netns.Process, error) {
	if r.Mode != "ambient" {
		return "", nil, fmt.Errorf("no node proxy in %s mode", r.Mode)
	}
	i, err := nodeIndex(node)
	if err != nil {
		return "", nil, err
	}
	name := ZtunnelPod(i)
	pr, ok := r.Proxies[name]
	if !ok {
		return "", nil, fmt.Errorf("no node proxy on %s", node)
	}
	return name, pr, nil
}

// CrashNodeProxy SIGKILLs a node's proxy: no drain. Its supervisor restarts
// it with back-off.
func (r *Reference) CrashNodeProxy(node string) (time.Time, error) {
	_, pr, err := r.nodeProxy(node)
	if err != nil {
		return time.Time{}, err
	}
	pr.Kill()
	return time.Now(), nil
}

// RestartNodeProxy is a graceful restart: a new proxy binds the same
// listeners (SO_REUSEPORT) and becomes ready, then the old one gets SIGTERM
// and drains. It returns when the old one got SIGTERM, with the instants the
// new one started, became ready, and the old one was told to stop; done is
// closed when the old one has exited.
func (r *Reference) RestartNodeProxy(ctx context.Context, node string) (started, ready, stopped time.Time, done <-chan struct{}, err error) {
	name, old, err := r.nodeProxy(node)
	if err != nil {
		return
	}
	r.gen++
	readyFile := filepath.Join(r.Dir, fmt.Sprintf("%s.ready.%d", name, r.gen))
	args := append([]string(nil), old.Spec.Args...)
	args = append(args, "--ready-file", readyFile)
	started = time.Now()
	pr, err := r.cl.Start(name, netns.ProcSpec{Name: "proxy-" + strconv.Itoa(r.gen), Args: args,
		ProbePort: ProxyAdminPort, ProbePath: "/ready"})
	if err != nil {
		return
	}
	for {
		if _, serr := os.Stat(readyFile); serr == nil {
			break
		}
		select {
		case <-ctx.Done():
			err = fmt.Errorf("new proxy on %s never became ready: %w", node, ctx.Err())
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	ready = time.Now()
	r.Proxies[name] = pr
	stopped = time.Now()
	ch := make(chan struct{})
	go func() { r.cl.Stop(old, r.Drain+5*time.Second); close(ch) }()
	return started, ready, stopped, ch, nil
}

// StopControlPlane takes the control plane down (no restart until
// StartControlPlane).
func (r *Reference) StopControlPlane() (time.Time, error) {
	pr, ok := r.Proxies[ControlPlanePod]
	if !ok {
		return time.Time{}, errors.New("no control plane")
	}
	at := time.Now()
	r.cl.Stop(pr, 2*time.Second)
	return at, nil
}

// StartControlPlane brings the control plane back and waits until it serves.
func (r *Reference) StartControlPlane(ctx context.Context) (time.Time, error) {
	pr, ok := r.Proxies[ControlPlanePod]
	if !ok {
		return time.Time{}, errors.New("no control plane")
	}
	at := time.Now()
	pr.Resume()
	return at, r.cl.WaitProcessReady(ctx, pr)
}

// CertExpiries asks every reachable proxy which certificates it holds and
// until when: identity -> earliest NotAfter across proxies.
func (r *Reference) CertExpiries(ctx context.Context) (map[string]time.Time, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	out := map[string]time.Time{}
	var errs []error
	for name := range r.Proxies {
		if name == ControlPlanePod {
			continue
		}
		p, ok := r.cl.Pod(name)
		if !ok || p.Node.Crashed() {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/config_dump", p.IP, ProxyAdminPort), nil)
		resp, err := client.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var dump struct {
			Certificates map[string]time.Time `json:"certificates"`
		}
		if err := json.Unmarshal(b, &dump); err != nil {
			errs = append(errs, fmt.Errorf("%s config_dump: %w", name, err))
			continue
		}
		for id, t := range dump.Certificates {
			if cur, ok := out[id]; !ok || t.Before(cur) {
				out[id] = t
			}
		}
	}
	return out, errors.Join(errs...)
}
