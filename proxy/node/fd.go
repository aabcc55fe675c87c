package node

import "golang.org/x/sys/unix"

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

// sameNetNS reports whether two descriptors refer to the same network
// namespace (same nsfs device and inode). Errors count as different: the
// caller then replaces the pod, which is always safe.
func sameNetNS(a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
