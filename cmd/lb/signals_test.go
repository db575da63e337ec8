package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// The first SIGTERM starts a graceful stop; a second signal (here ^C)
// hurries it.
func TestSecondSignalHurriesTheStop(t *testing.T) {
	stop, hurry, release := stopSignals()
	defer release()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stop.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not start the stop")
	}
	select {
	case <-hurry:
		t.Fatal("one signal both stopped and hurried")
	default:
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hurry:
	case <-time.After(5 * time.Second):
		t.Fatal("a second signal did not hurry the stop")
	}
}
