package inpod

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The node agent's access to the Kubernetes API: plain HTTPS with the pod's
// service account, no client-go. The agent runs from the slim binary
// (-tags nokube), which client-go would double in size, and it needs four
// requests: list and watch a node's pods, get a namespace.

// ServiceAccountDir is where the kubelet mounts a pod's service account
// token and the cluster CA.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Defaults of KubeAPI.
const (
	DefaultRequestTimeout = 15 * time.Second
	// DefaultWatchTimeout is how long the API server keeps one watch open
	// (timeoutSeconds); the agent then watches again from where it was.
	DefaultWatchTimeout = 5 * time.Minute
)

// KubeAPI is a minimal Kubernetes API client.
type KubeAPI struct {
	// Base is the API server's URL, e.g. https://10.96.0.1:443.
	Base string
	// Token returns the bearer token. It is read for every request: the
	// kubelet rotates projected service account tokens in place.
	Token func() (string, error)
	// Client carries the TLS configuration; its own Timeout stays 0 (the
	// per-request contexts bound each request, and a watch is long).
	Client *http.Client
	// RequestTimeout bounds a list or get, body included.
	RequestTimeout time.Duration
	// WatchTimeout is the server-side length of a watch; the client gives up
	// on a watch that outlives it by RequestTimeout.
	WatchTimeout time.Duration
}

// NewKubeAPI returns a client of the API server at base, trusting roots (nil:
// the system's) and authenticating with token.
func NewKubeAPI(base string, roots *x509.CertPool, token func() (string, error)) (*KubeAPI, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API server %q: want https://host:port", base)
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}
	return &KubeAPI{Base: strings.TrimRight(base, "/"), Token: token, Client: &http.Client{Transport: tr},
		RequestTimeout: DefaultRequestTimeout, WatchTimeout: DefaultWatchTimeout}, nil
}

// InClusterAPI is the API server of the cluster the pod runs in:
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, with the service
// account's token and CA from dir (ServiceAccountDir).
func InClusterAPI(dir string) (*KubeAPI, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is unset")
	}
	return ServiceAccountAPI("https://"+net.JoinHostPort(host, port), dir)
}

// ServiceAccountAPI is the API server at base with the service account
// credentials in dir (token and ca.crt).
func ServiceAccountAPI(base, dir string) (*KubeAPI, error) {
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("service account CA %s: no PEM certificate in it", filepath.Join(dir, "ca.crt"))
	}
	tokenPath := filepath.Join(dir, "token")
	token := func() (string, error) {
		b, err := os.ReadFile(tokenPath)
		if err != nil {
			return "", fmt.Errorf("service account token: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("service account token %s is empty", tokenPath)
		}
		return t, nil
	}
	if _, err := token(); err != nil {
		return nil, err
	}
	return NewKubeAPI(base, roots, token)
}

// KubePod is the part of a Pod the agent reads.
type KubePod struct {
	Metadata PodMeta   `json:"metadata"`
	Spec     PodSpec   `json:"spec"`
	Status   PodStatus `json:"status"`
}

// PodMeta is the part of a pod's metadata the agent reads.
type PodMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid"`
	ResourceVersion   string            `json:"resourceVersion"`
	Labels            map[string]string `json:"labels"`
	DeletionTimestamp *string           `json:"deletionTimestamp"`
}

// PodSpec is the part of a pod's spec the agent reads.
type PodSpec struct {
	NodeName           string `json:"nodeName"`
	HostNetwork        bool   `json:"hostNetwork"`
	ServiceAccountName string `json:"serviceAccountName"`
}

// PodStatus is the part of a pod's status the agent reads.
type PodStatus struct {
	Phase string `json:"phase"`
	PodIP string `json:"podIP"`
}

// Key is the pod's namespace/name: the workload UID the reference control
// plane and proxies use.
func (p *KubePod) Key() string { return p.Metadata.Namespace + "/" + p.Metadata.Name }

// PodList is a list response.
type PodList struct {
	ResourceVersion string
	Items           []KubePod
}

// Watch event types.
const (
	EventAdded    = "ADDED"
	EventModified = "MODIFIED"
	EventDeleted  = "DELETED"
	EventBookmark = "BOOKMARK"
)

// PodEvent is one event of a pod watch. Bookmarks carry only
// ResourceVersion.
type PodEvent struct {
	Type            string
	Pod             KubePod
	ResourceVersion string
}

// ErrGone is a watch whose resource version is too old (HTTP 410): the
// caller must list again.
var ErrGone = errors.New("resource version too old (410 Gone): list again")

// APIError is a non-2xx answer, with the API's own Status message.
type APIError struct {
	Method, Path string
	Code         int
	Message      string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Code, http.StatusText(e.Code))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// status is the API's error body (kind Status).
type status struct {
	Kind    string `json:"kind"`
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func podsPath(node string) string {
	q := url.Values{"fieldSelector": {"spec.nodeName=" + node}}
	return "/api/v1/pods?" + q.Encode()
}

// ListPods lists the pods scheduled on node.
func (k *KubeAPI) ListPods(ctx context.Context, node string) (PodList, error) {
	var out struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []KubePod `json:"items"`
	}
	if err := k.get(ctx, podsPath(node), &out); err != nil {
		return PodList{}, err
	}
	if out.Metadata.ResourceVersion == "" {
		return PodList{}, fmt.Errorf("GET %s: list without a resourceVersion", podsPath(node))
	}
	return PodList{ResourceVersion: out.Metadata.ResourceVersion, Items: out.Items}, nil
}

// NamespaceLabels returns a namespace's labels; found is false when it does
// not exist.
func (k *KubeAPI) NamespaceLabels(ctx context.Context, name string) (labels map[string]string, found bool, err error) {
	var out struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	err = k.get(ctx, "/api/v1/namespaces/"+url.PathEscape(name), &out)
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == http.StatusNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return out.Metadata.Labels, true, nil
}

// get GETs path into out within RequestTimeout.
func (k *KubeAPI) get(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, k.requestTimeout())
	defer cancel()
	resp, err := k.do(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// A list of one node's pods is small; the bound keeps a broken server
	// from filling memory.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("GET %s: read: %w", path, err)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: malformed JSON: %v", path, err)
	}
	return nil
}

// do sends an authenticated GET and returns a 2xx response (an APIError
// otherwise).
func (k *KubeAPI) do(ctx context.Context, path string) (*http.Response, error) {
	token, err := k.Token()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.Base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "blastradius-node-agent")
	resp, err := k.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	ae := &APIError{Method: http.MethodGet, Path: path, Code: resp.StatusCode}
	var st status
	if json.Unmarshal(b, &st) == nil && st.Message != "" {
		ae.Message = st.Message
	} else {
		ae.Message = strings.Join(strings.Fields(string(b)), " ")
		if len(ae.Message) > 200 {
			ae.Message = ae.Message[:200] + "..."
		}
	}
	if resp.StatusCode == http.StatusGone {
		return nil, fmt.Errorf("%w: %v", ErrGone, ae)
	}
	return nil, ae
}

// WatchPods watches node's pods from resourceVersion and calls fn for each
// event, until the server ends the watch (after WatchTimeout: it returns nil
// and the caller watches again from the last resource version it saw), fn
// returns an error, or the watch fails: ErrGone when the resource version is
// too old, another error when the stream breaks or is malformed.
func (k *KubeAPI) WatchPods(ctx context.Context, node, resourceVersion string, fn func(PodEvent) error) error {
	wt := k.WatchTimeout
	if wt <= 0 {
		wt = DefaultWatchTimeout
	}
	q := url.Values{
		"fieldSelector":       {"spec.nodeName=" + node},
		"watch":               {"1"},
		"resourceVersion":     {resourceVersion},
		"allowWatchBookmarks": {"true"},
		"timeoutSeconds":      {fmt.Sprint(int(wt / time.Second))},
	}
	path := "/api/v1/pods?" + q.Encode()
	// The server closes the watch after timeoutSeconds; if it does not (a
	// half-open connection), the client does shortly after.
	ctx, cancel := context.WithTimeout(ctx, wt+k.requestTimeout())
	defer cancel()
	resp, err := k.do(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var raw struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) && ctx.Err() == nil {
			return nil
		}
		if err != nil {
			// Our deadline cancels the request; the body may then end
			// with a clean EOF rather than an error. Either way the server
			// did not end the watch: say so.
			if ctx.Err() != nil {
				return fmt.Errorf("watch pods: %w", ctx.Err())
			}
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			if errors.As(err, &se) || errors.As(err, &te) {
				return fmt.Errorf("watch pods: malformed event: %v", err)
			}
			return fmt.Errorf("watch pods: stream: %w", err)
		}
		ev, err := decodeEvent(raw.Type, raw.Object)
		if err != nil {
			return fmt.Errorf("watch pods: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

func decodeEvent(typ string, obj json.RawMessage) (PodEvent, error) {
	switch typ {
	case EventAdded, EventModified, EventDeleted:
		ev := PodEvent{Type: typ}
		if err := json.Unmarshal(obj, &ev.Pod); err != nil {
			return PodEvent{}, fmt.Errorf("malformed %s event: %v", typ, err)
		}
		if ev.Pod.Metadata.Name == "" || ev.Pod.Metadata.Namespace == "" {
			return PodEvent{}, fmt.Errorf("malformed %s event: pod without a namespace and name", typ)
		}
		ev.ResourceVersion = ev.Pod.Metadata.ResourceVersion
		return ev, nil
	case EventBookmark:
		var b struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(obj, &b); err != nil || b.Metadata.ResourceVersion == "" {
			return PodEvent{}, fmt.Errorf("malformed BOOKMARK event: %s", abbrev(obj))
		}
		return PodEvent{Type: typ, ResourceVersion: b.Metadata.ResourceVersion}, nil
	case "ERROR":
		var st status
		if err := json.Unmarshal(obj, &st); err != nil {
			return PodEvent{}, fmt.Errorf("malformed ERROR event: %s", abbrev(obj))
		}
		if st.Code == http.StatusGone {
			return PodEvent{}, fmt.Errorf("%w: %s", ErrGone, st.Message)
		}
		return PodEvent{}, fmt.Errorf("API error %d %s: %s", st.Code, st.Reason, st.Message)
	case "":
		return PodEvent{}, fmt.Errorf("malformed event without a type: %s", abbrev(obj))
	}
	return PodEvent{}, fmt.Errorf("unknown event type %q", typ)
}

func abbrev(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

func (k *KubeAPI) requestTimeout() time.Duration {
	if k.RequestTimeout > 0 {
		return k.RequestTimeout
	}
	return DefaultRequestTimeout
}
