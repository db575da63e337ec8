package health

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// An active probe that pacer could not make, for want of a descriptor of
// its own, says nothing about the backend: counted as a failed check, it
// took every probed backend out of rotation (and DNS) whenever pacer ran
// short. Run alone in a child process, which it starves of descriptors.
func TestProbeOutOfDescriptorsIsNoBackendFault(t *testing.T) {
	if !testnet.InChild(t) {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a := netip.MustParseAddrPort(ln.Addr().String())
	check := &discovery.HealthCheck{Protocol: discovery.CheckTCP}
	svc := &discovery.Service{Key: discovery.ServiceKey{App: "/web"}, ServicePort: 10000, Check: check,
		Backends: []discovery.Backend{{TaskID: "t1", Addr: a}}}
	h := start(t, Config{Interval: 10 * time.Millisecond, Timeout: time.Second, Fall: 1},
		&discovery.App{ID: "/web", Services: []*discovery.Service{svc}})
	h.waitFor("a first passing probe", func(*discovery.Snapshot) bool { return h.c.Stats().ProbesOK > 0 })

	d := testnet.ExhaustDescriptors(t)
	failed := h.c.Stats().ProbesFailed
	h.waitFor("five probes pacer could not make", func(*discovery.Snapshot) bool { return h.c.Stats().ProbesFailed >= failed+5 })
	if v, _ := h.c.Verdict(a); !v.Healthy {
		t.Fatalf("the backend was judged on probes pacer could not make: %+v", v)
	}
	if why, ejected := h.table.Snapshot().Ejected(a); ejected {
		t.Fatalf("the backend left rotation for pacer's own shortage: %s", why)
	}
	d.Release()
	ok := h.c.Stats().ProbesOK
	h.waitFor("probes passing again", func(*discovery.Snapshot) bool { return h.c.Stats().ProbesOK > ok })
}
