package health

import (
	"errors"
	"syscall"
)

// LocalShortage reports whether a connection attempt failed for want of a
// resource of this host rather than because of the backend: descriptors
// (EMFILE, ENFILE), kernel memory (ENOBUFS, ENOMEM), or a free ephemeral
// port for the backend's address (EADDRNOTAVAIL from connect). Such a
// failure says nothing about the backend: counted against it, pacer
// running short would eject healthy backends, and take them out of DNS.
// The proxies do not report it, and a probe that meets it is not counted.
// An accept that fails so is paused and retried, not given up.
func LocalShortage(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL:
		return true
	}
	return false
}
