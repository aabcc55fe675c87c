package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// packet is one captured IPv4/TCP segment.
type packet struct {
	src, dst     net.IP
	sport, dport uint16
	payload      []byte
}

// capture records TCP segments on a node's eth0 with an AF_PACKET socket
// opened inside the node's namespace: what a tcpdump on the node link sees.
type capture struct {
	fd      int
	mu      sync.Mutex
	packets []packet
	done    chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startCapture(inNode func(func() error) error) (*capture, error) {
	c := &capture{done: make(chan struct{})}
	err := inNode(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		c.fd = fd
		return nil
	})
	if err != nil {
		return nil, err
	}
	go c.loop()
	return c, nil
}

func (c *capture) loop() {
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil || n < 14+20 {
			continue
		}
		if binary.BigEndian.Uint16(buf[12:14]) != 0x0800 {
			continue
		}
		ip := buf[14:n]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != unix.IPPROTO_TCP || len(ip) < ihl+20 {
			continue
		}
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if total < len(ip) {
			ip = ip[:total]
		}
		tcp := ip[ihl:]
		off := int(tcp[12]>>4) * 4
		if len(tcp) < off {
			continue
		}
		p := packet{src: net.IP(append([]byte(nil), ip[12:16]...)), dst: net.IP(append([]byte(nil), ip[16:20]...)),
			sport: binary.BigEndian.Uint16(tcp[0:2]), dport: binary.BigEndian.Uint16(tcp[2:4]),
			payload: append([]byte(nil), tcp[off:]...)}
		c.mu.Lock()
		c.packets = append(c.packets, p)
		c.mu.Unlock()
	}
}

func (c *capture) stop() []packet {
	close(c.done)
	time.Sleep(150 * time.Millisecond) // one receive timeout: the loop has seen done
	unix.Close(c.fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets
}

// summary: whether the marker was seen in clear, whether TLS records went
// over port 15008, and which TCP ports carried payload.
func summarize(ps []packet, marker []byte) (clear bool, tls15008 bool, ports map[uint16]int) {
	ports = map[uint16]int{}
	for _, p := range ps {
		if len(p.payload) == 0 {
			continue
		}
		if bytes.Contains(p.payload, marker) {
			clear = true
		}
		if (p.dport == 15008 || p.sport == 15008) && len(p.payload) >= 3 &&
			(p.payload[0] == 0x16 || p.payload[0] == 0x17) && p.payload[1] == 0x03 {
			tls15008 = true
		}
		port := p.dport
		if p.sport < p.dport {
			port = p.sport
		}
		ports[port]++
	}
	return
}
