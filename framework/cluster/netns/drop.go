package netns

import (
	"fmt"
	"net"
	"time"

	"blastradius.dev/blastradius/internal/nftpart"
)

// DropFlow black-holes one flow: TCP from src to any of the pod's ports is
// dropped as it enters the pod (nftpart.DropFlow). It returns the instant the rule is
// live and what removes it.
func (c *Cluster) DropFlow(pod string, src net.IP, ports ...int) (time.Time, func() (time.Time, time.Duration, error), error) {
	p, ok := c.pods[pod]
	if !ok {
		return time.Time{}, nil, fmt.Errorf("drop flow: no pod %s", pod)
	}
	at, undo, err := nftpart.DropFlow(p.fd, src, p.IP, ports...)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("drop flow in %s: %w", pod, err)
	}
	return at, undo, nil
}

// DropPod cuts a pod off the network as a failed link would, loopback
// excepted (nftpart.DropPod).
func (c *Cluster) DropPod(pod string) (time.Time, func() (time.Time, time.Duration, error), error) {
	p, ok := c.pods[pod]
	if !ok {
		return time.Time{}, nil, fmt.Errorf("drop pod: no pod %s", pod)
	}
	at, undo, err := nftpart.DropPod(p.fd)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("drop pod %s: %w", pod, err)
	}
	return at, undo, nil
}
