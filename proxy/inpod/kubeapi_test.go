package inpod

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is an API server for one node's pods and the namespaces: list,
// watch (with resource versions, bookmarks and 410 for compacted history)
// and get, over TLS with a bearer token, as the agent sees the real one.
type fakeAPI struct {
	t     *testing.T
	srv   *httptest.Server
	token string

	mu        sync.Mutex
	rv        int
	pods      map[string]KubePod
	ns        map[string]map[string]string // namespace -> labels
	history   []fakeEvent
	compacted int           // watches from before this resource version get 410
	epoch     int           // bumped to end every open watch (an API server restart)
	changed   chan struct{} // closed and replaced on every change
	// hooks, when set, answer a request instead (return true when they did).
	listHook  func(w http.ResponseWriter) bool
	watchHook func(w http.ResponseWriter, r *http.Request) bool
	requests  []string
}

type fakeEvent struct {
	rv  int
	typ string
	pod KubePod
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, token: "token-1", rv: 100, pods: map[string]KubePod{}, ns: map[string]map[string]string{},
		changed: make(chan struct{})}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	// Watches a failed test left open (an agent still running) would keep
	// Close waiting for them: cut them first.
	t.Cleanup(func() { f.srv.CloseClientConnections(); f.srv.Close() })
	return f
}

// client is a KubeAPI for f with the credentials written as a service
// account directory.
func (f *fakeAPI) client(t *testing.T) (*KubeAPI, string) {
	t.Helper()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	f.setToken(t, dir, f.token)
	k, err := ServiceAccountAPI(f.srv.URL, dir)
	if err != nil {
		t.Fatal(err)
	}
	return k, dir
}

func (f *fakeAPI) setToken(t *testing.T, dir, token string) {
	t.Helper()
	f.mu.Lock()
	f.token = token
	f.mu.Unlock()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mkPod(ns, name, node, ip string, labels map[string]string) KubePod {
	var p KubePod
	p.Metadata.Namespace, p.Metadata.Name, p.Metadata.UID = ns, name, "uid-"+ns+"-"+name
	p.Metadata.Labels = labels
	p.Spec.NodeName = node
	p.Spec.ServiceAccountName = "sa-" + name
	p.Status.Phase, p.Status.PodIP = "Running", ip
	if ip == "" {
		p.Status.Phase = "Pending"
	}
	return p
}

// setPod creates or updates a pod (ADDED or MODIFIED).
func (f *fakeAPI) setPod(p KubePod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	typ := EventModified
	if _, ok := f.pods[p.Key()]; !ok {
		typ = EventAdded
	}
	f.rv++
	p.Metadata.ResourceVersion = strconv.Itoa(f.rv)
	f.pods[p.Key()] = p
	f.history = append(f.history, fakeEvent{rv: f.rv, typ: typ, pod: p})
	f.notify()
}

func (f *fakeAPI) deletePod(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[key]
	if !ok {
		f.t.Fatalf("no pod %s", key)
	}
	delete(f.pods, key)
	f.rv++
	p.Metadata.ResourceVersion = strconv.Itoa(f.rv)
	f.history = append(f.history, fakeEvent{rv: f.rv, typ: EventDeleted, pod: p})
	f.notify()
}

func (f *fakeAPI) setNamespace(name string, labels map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ns[name] = labels
}

// compact drops the history: watches from an older resource version get 410
// and open watches end.
func (f *fakeAPI) compact() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compacted = f.rv + 1
	f.rv++
	f.notify()
}

// endWatches ends every open watch, as an API server restart does.
func (f *fakeAPI) endWatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.notify()
}

func (f *fakeAPI) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAPI) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(status{Kind: "Status", Code: code, Reason: reason, Message: msg})
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.URL.RequestURI())
	token := f.token
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+token {
		writeStatus(w, 401, "Unauthorized", "Unauthorized")
		return
	}
	switch {
	case r.URL.Path == "/api/v1/pods":
		node, ok := strings.CutPrefix(r.URL.Query().Get("fieldSelector"), "spec.nodeName=")
		if !ok {
			writeStatus(w, 400, "BadRequest", "the agent must select its node's pods")
			return
		}
		if r.URL.Query().Get("watch") == "1" {
			f.watch(w, r, node)
			return
		}
		f.list(w, node)
	case strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/"):
		name := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/")
		f.mu.Lock()
		labels, ok := f.ns[name]
		f.mu.Unlock()
		if !ok {
			writeStatus(w, 404, "NotFound", fmt.Sprintf("namespaces %q not found", name))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"kind": "Namespace", "metadata": map[string]any{"name": name, "labels": labels}})
	default:
		writeStatus(w, 404, "NotFound", "the server could not find the requested resource")
	}
}

func (f *fakeAPI) list(w http.ResponseWriter, node string) {
	f.mu.Lock()
	hook := f.listHook
	f.mu.Unlock()
	if hook != nil && hook(w) {
		return
	}
	f.mu.Lock()
	var items []KubePod
	for _, k := range sortedKeys(f.pods) {
		if p := f.pods[k]; p.Spec.NodeName == node {
			items = append(items, p)
		}
	}
	rv := f.rv
	f.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{"kind": "PodList", "metadata": map[string]any{"resourceVersion": strconv.Itoa(rv)}, "items": items})
}

func (f *fakeAPI) watch(w http.ResponseWriter, r *http.Request, node string) {
	f.mu.Lock()
	hook := f.watchHook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	from, err := strconv.Atoi(r.URL.Query().Get("resourceVersion"))
	if err != nil {
		writeStatus(w, 400, "BadRequest", "resourceVersion")
		return
	}
	secs, _ := strconv.Atoi(r.URL.Query().Get("timeoutSeconds"))
	timeout := time.After(time.Duration(secs) * time.Second)
	flusher := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	flusher.Flush()
	enc := json.NewEncoder(w)
	f.mu.Lock()
	epoch := f.epoch
	f.mu.Unlock()
	for {
		f.mu.Lock()
		if f.epoch != epoch {
			f.mu.Unlock()
			return
		}
		if from < f.compacted-1 {
			f.mu.Unlock()
			enc.Encode(map[string]any{"type": "ERROR", "object": status{Kind: "Status", Code: 410, Reason: "Expired", Message: "too old resource version"}})
			return
		}
		var send []fakeEvent
		for _, e := range f.history {
			if e.rv > from && e.pod.Spec.NodeName == node {
				send = append(send, e)
			}
		}
		last := f.rv
		changed := f.changed
		compacted := f.compacted
		f.mu.Unlock()
		for _, e := range send {
			enc.Encode(map[string]any{"type": e.typ, "object": e.pod})
			from = e.rv
		}
		if compacted > 0 && from < compacted-1 {
			return // compaction ends open watches; the agent's next one gets 410
		}
		if len(send) == 0 && last > from {
			// Changes elsewhere: tell the agent where it stands.
			enc.Encode(map[string]any{"type": EventBookmark, "object": map[string]any{"metadata": map[string]any{"resourceVersion": strconv.Itoa(last)}}})
			from = last
		}
		flusher.Flush()
		select {
		case <-changed:
		case <-timeout:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func TestKubeAPIListAndNamespaces(t *testing.T) {
	f := newFakeAPI(t)
	k, dir := f.client(t)
	f.setPod(mkPod("a", "p1", "w1", "10.1.0.2", map[string]string{"app": "x"}))
	f.setPod(mkPod("a", "p2", "w2", "10.1.0.3", nil))
	f.setNamespace("a", map[string]string{AmbientLabel: "ambient"})
	ctx := context.Background()
	list, err := k.ListPods(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if list.ResourceVersion != "102" || len(list.Items) != 1 || list.Items[0].Key() != "a/p1" ||
		list.Items[0].Status.PodIP != "10.1.0.2" || list.Items[0].Metadata.Labels["app"] != "x" {
		t.Errorf("list %+v", list)
	}
	if got := f.requestLog()[0]; got != "/api/v1/pods?fieldSelector=spec.nodeName%3Dw1" {
		t.Errorf("request %s", got)
	}
	labels, found, err := k.NamespaceLabels(ctx, "a")
	if err != nil || !found || labels[AmbientLabel] != "ambient" {
		t.Errorf("namespace a: %v %v %v", labels, found, err)
	}
	if _, found, err := k.NamespaceLabels(ctx, "gone"); err != nil || found {
		t.Errorf("missing namespace: found %v, err %v", found, err)
	}
	// A rotated token is used from the next request on.
	f.setToken(t, dir, "token-2")
	if _, err := k.ListPods(ctx, "w1"); err != nil {
		t.Errorf("after rotation: %v", err)
	}
}

// Errors are one line and say what the API server said; nothing panics on
// what a broken or hostile server sends.
func TestKubeAPIErrors(t *testing.T) {
	f := newFakeAPI(t)
	k, _ := f.client(t)
	ctx := context.Background()
	answer := func(code int, body string) {
		f.mu.Lock()
		f.listHook = func(w http.ResponseWriter) bool {
			w.WriteHeader(code)
			fmt.Fprint(w, body)
			return true
		}
		f.mu.Unlock()
	}
	for _, c := range []struct {
		code       int
		body, want string
	}{
		{403, `{"kind":"Status","code":403,"reason":"Forbidden","message":"pods is forbidden: User \"system:serviceaccount:x:default\" cannot list resource \"pods\""}`,
			`GET /api/v1/pods?fieldSelector=spec.nodeName%3Dw1: 403 Forbidden: pods is forbidden: User "system:serviceaccount:x:default" cannot list resource "pods"`},
		{500, "<html>\n<body>oops</body>\n</html>", "500 Internal Server Error: <html> <body>oops</body> </html>"},
		{200, `{"kind":"PodList","items":[{"metadata":`, "malformed JSON"},
		{200, `{"kind":"PodList","metadata":{"resourceVersion":"5"},"items":{"not":"a list"}}`, "malformed JSON"},
		{200, `{"kind":"PodList","items":[]}`, "without a resourceVersion"},
		{200, `[1,2,3]`, "malformed JSON"},
		{200, ``, "malformed JSON"},
	} {
		answer(c.code, c.body)
		_, err := k.ListPods(ctx, "w1")
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%d %q: error %v, want one line with %q", c.code, c.body, err, c.want)
		}
	}
	var ae *APIError
	answer(403, `{"kind":"Status","message":"no"}`)
	if _, err := k.ListPods(ctx, "w1"); !errors.As(err, &ae) || ae.Code != 403 {
		t.Errorf("403: %v is not an APIError", err)
	}

	// A wrong token is the API's 401, said as such.
	f.mu.Lock()
	f.listHook, f.token = nil, "other"
	f.mu.Unlock()
	if _, err := k.ListPods(ctx, "w1"); err == nil || !strings.Contains(err.Error(), "401 Unauthorized") {
		t.Errorf("bad token: %v", err)
	}
}

// A server that never answers costs RequestTimeout, not forever.
func TestKubeAPIRequestTimeout(t *testing.T) {
	f := newFakeAPI(t)
	k, _ := f.client(t)
	release := make(chan struct{})
	defer close(release)
	f.mu.Lock()
	f.listHook = func(w http.ResponseWriter) bool { <-release; return true }
	f.mu.Unlock()
	k.RequestTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err := k.ListPods(context.Background(), "w1")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

func collectWatch(t *testing.T, k *KubeAPI, rv string) ([]PodEvent, error) {
	t.Helper()
	var evs []PodEvent
	err := k.WatchPods(context.Background(), "w1", rv, func(ev PodEvent) error {
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}

func TestKubeAPIWatch(t *testing.T) {
	f := newFakeAPI(t)
	k, _ := f.client(t)
	k.WatchTimeout = time.Second // the fake ends the watch after timeoutSeconds
	f.setPod(mkPod("a", "p1", "w1", "", nil))
	p := mkPod("a", "p1", "w1", "10.1.0.2", nil)
	f.setPod(p)
	f.setPod(mkPod("a", "other-node", "w2", "10.2.0.2", nil))
	f.deletePod("a/p1")
	evs, err := collectWatch(t, k, "100")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Type+" "+e.Pod.Key()+" "+e.Pod.Status.PodIP+" @"+e.ResourceVersion)
	}
	want := []string{"ADDED a/p1  @101", "MODIFIED a/p1 10.1.0.2 @102", "DELETED a/p1 10.1.0.2 @104"}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	q := f.requestLog()[0]
	for _, s := range []string{"watch=1", "resourceVersion=100", "allowWatchBookmarks=true", "timeoutSeconds=1", "fieldSelector=spec.nodeName%3Dw1"} {
		if !strings.Contains(q, s) {
			t.Errorf("watch request %s lacks %s", q, s)
		}
	}
	// Changes on other nodes only: a bookmark moves the resource version.
	f.setPod(mkPod("a", "elsewhere", "w2", "10.2.0.3", nil))
	evs, err = collectWatch(t, k, "104")
	if err != nil || len(evs) != 1 || evs[0].Type != EventBookmark || evs[0].ResourceVersion != "105" {
		t.Errorf("bookmark: %+v, %v", evs, err)
	}
	// Compacted history: 410, which the caller must answer with a list.
	f.compact()
	if _, err := collectWatch(t, k, "101"); !errors.Is(err, ErrGone) {
		t.Errorf("watch from a compacted version: %v, want ErrGone", err)
	}
}

// What a broken watch stream can hold: each is a one-line error, never a
// panic, and events before it are delivered.
func TestKubeAPIWatchMalformed(t *testing.T) {
	f := newFakeAPI(t)
	k, _ := f.client(t)
	good := `{"type":"ADDED","object":{"metadata":{"name":"p","namespace":"a","resourceVersion":"7"},"status":{"podIP":"10.1.0.2"}}}` + "\n"
	for body, want := range map[string]string{
		good + `{"type":"ADDED","object":{"metadata":{"name":`:                                           "stream: unexpected EOF",
		good + `{"type":"ADDED","object":{"metadata":"not an object"}}`:                                  "malformed ADDED event",
		good + `{"type":"MODIFIED","object":{"metadata":{"namespace":"a"}}}`:                             "pod without a namespace and name",
		good + `{"type":"ADDED","object":{"spec":{"hostNetwork":"yes"},"metadata":{}}}`:                  "malformed ADDED event",
		good + `{"type":"BOOKMARK","object":{}}`:                                                         "malformed BOOKMARK event",
		good + `{"type":"ERROR","object":{"code":500,"reason":"InternalError","message":"etcd is sad"}}`: "API error 500 InternalError: etcd is sad",
		good + `{"type":"ERROR","object":[]}`:                                                            "malformed ERROR event",
		good + `{"type":"EXPLODED","object":{}}`:                                                         `unknown event type "EXPLODED"`,
		good + `{"object":{}}`:                                                                           "without a type",
		good + `not json at all`:                                                                         "malformed event",
		good + `{"type":"ADDED","object":{}} ]`:                                                          "malformed",
		good + "\x00\x01\x02":                                                                            "malformed event",
	} {
		f.mu.Lock()
		f.watchHook = func(w http.ResponseWriter, _ *http.Request) bool { fmt.Fprint(w, body); return true }
		f.mu.Unlock()
		evs, err := collectWatch(t, k, "1")
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line with %q", body, err, want)
		}
		if len(evs) != 1 || evs[0].Pod.Key() != "a/p" {
			t.Errorf("%q: events before the bad one: %+v", body, evs)
		}
	}
	// HTTP 410 on the watch request itself is ErrGone too.
	f.mu.Lock()
	f.watchHook = func(w http.ResponseWriter, _ *http.Request) bool {
		writeStatus(w, 410, "Expired", "too old")
		return true
	}
	f.mu.Unlock()
	if _, err := collectWatch(t, k, "1"); !errors.Is(err, ErrGone) {
		t.Errorf("HTTP 410: %v", err)
	}
}

// A watch the server never ends (a half-open connection) is given up shortly
// after its timeout.
func TestKubeAPIWatchDeadline(t *testing.T) {
	f := newFakeAPI(t)
	k, _ := f.client(t)
	k.WatchTimeout, k.RequestTimeout = time.Second, 200*time.Millisecond
	f.mu.Lock()
	f.watchHook = func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	}
	f.mu.Unlock()
	start := time.Now()
	_, err := collectWatch(t, k, "1")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("gave up after %v, want about 1.2s", d)
	}
}

func TestInClusterAPI(t *testing.T) {
	f := newFakeAPI(t)
	_, dir := f.client(t)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := InClusterAPI(dir); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("outside a pod: %v", err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	k, err := InClusterAPI(dir)
	if err != nil || k.Base != "https://[fd00::1]:443" {
		t.Errorf("in cluster: %v %v", k, err)
	}
	empty := t.TempDir()
	if _, err := InClusterAPI(empty); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Errorf("no CA: %v", err)
	}
	os.WriteFile(filepath.Join(empty, "ca.crt"), []byte("garbage"), 0o644)
	if _, err := InClusterAPI(empty); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("bad CA: %v", err)
	}
	os.WriteFile(filepath.Join(empty, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o644)
	if _, err := InClusterAPI(empty); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("no token: %v", err)
	}
	if _, err := NewKubeAPI("http://insecure:80", nil, nil); err == nil {
		t.Error("plain HTTP accepted")
	}
}
