// Package sandbox puts the runner inside its own user, network, mount and PID
// namespaces, so the embedded cluster needs no root and cannot leak.
//
// A Go process cannot unshare its own user namespace (it is multithreaded), so
// Enter re-executes the binary as the first process of the new namespaces and
// waits for it. Everything the cluster creates — network namespaces held by file
// descriptor, processes, mounts — lives inside; the child is PID 1 of its PID
// namespace and dies with its parent (PDEATHSIG), and when PID 1 dies the
// kernel kills every process in the namespace. A kill -9 of the runner therefore
// leaves nothing behind.
package sandbox
