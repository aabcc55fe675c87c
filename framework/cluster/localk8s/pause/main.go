// Command pause is the sandbox ("pause") container of the local-k8s
// provider's nodes: there is no registry to pull one from, so the provider
// builds this static binary into a one-layer image and imports it into every
// node's containerd. Without arguments it holds the pod's namespaces open,
// reaps the zombies of the pod's other processes and exits on SIGTERM or
// SIGINT.
//
// Two more modes let the same image check a cluster without pulling
// anything: `pause serve <addr>` answers every HTTP request with the host
// name (the pod's name), and `pause get <url> <timeout>` fetches a URL,
// retrying until the timeout, and exits 0 on a 200.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "serve" {
		go serve(os.Args[2])
	} else if len(os.Args) >= 4 && os.Args[1] == "get" {
		os.Exit(get(os.Args[2], os.Args[3]))
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// As PID 1 of the pod's PID namespace (when shared), orphans are
		// ours to reap: collect every exited child, not just one per signal.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, host)
	}))
	fmt.Fprintln(os.Stderr, "serve:", err)
	os.Exit(1)
}

func get(url, timeout string) int {
	d, err := time.ParseDuration(timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "get: timeout:", err)
		return 2
	}
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("%s", body)
				return 0
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "get %s: %v (gave up after %s)\n", url, err, d)
			return 1
		}
		time.Sleep(500 * time.Millisecond)
	}
}
