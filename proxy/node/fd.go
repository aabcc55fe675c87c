package node

import "golang.org/x/sys/unix"

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}
