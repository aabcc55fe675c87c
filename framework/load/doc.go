// Package load holds the workloads that run inside pod network namespaces as
// `blastradius agent ...` processes: the servers that answer (an HTTP echo
// server and a TCP echo server) and the clients that measure (open-loop flows
// of HTTP requests or echoed stream messages at a fixed rate).
//
// A client records the outcome of every request as an events.Event the moment
// it completes, one write(2) per event, because the process it runs in may be
// SIGKILLed at any instant: killing it is how a node crash is simulated, and
// whatever it measured up to then must survive.
//
// The clients are deliberately naive. They never retry, never hide the first
// error after a fault behind a transparent reconnect, and classify every
// failure by its socket-level cause (refused, reset, timeout, unreachable), so
// the event files say exactly what an application would have seen. Pacing
// comes from fortio's periodic runner in open-loop mode: requests are sent on
// schedule whether or not earlier ones have answered, so a stalled target
// shows up as timeouts at the offered rate rather than as a quiet gap.
package load
