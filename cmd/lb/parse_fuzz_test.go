package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzParsePortRange: --ports. What it accepts is a range inside 1-65535
// that reads back the same from its canonical MIN-MAX form; every such
// range is accepted; an error quotes the value given.
func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"8000-8100", "8000", " 80 - 90 ", "9000-8000", "0-10", "1-65536", "-5", "1-2-3", "+80-90", "", "x"} {
		f.Add(s, uint16(8000), uint16(8100))
	}
	f.Fuzz(func(t *testing.T, s string, a, b uint16) {
		lo, hi, err := parsePortRange(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Errorf("parsePortRange(%q): error %q does not quote the value", s, err)
			}
		} else {
			if lo < 1 || hi > 65535 || lo > hi {
				t.Fatalf("parsePortRange(%q) = %d-%d: not a range of ports", s, lo, hi)
			}
			canon := fmt.Sprintf("%d-%d", lo, hi)
			if lo2, hi2, err := parsePortRange(canon); err != nil || lo2 != lo || hi2 != hi {
				t.Fatalf("parsePortRange(%q) = %d-%d, but %q reads as %d-%d, %v", s, lo, hi, canon, lo2, hi2, err)
			}
		}
		// Every real range is accepted, in both spellings.
		lo, hi = int(min(a, b)), int(max(a, b))
		if lo == 0 {
			return
		}
		for _, in := range []string{fmt.Sprintf("%d-%d", lo, hi), fmt.Sprintf(" %d - %d ", lo, hi)} {
			if l, h, err := parsePortRange(in); err != nil || l != lo || h != hi {
				t.Fatalf("parsePortRange(%q) = %d, %d, %v", in, l, h, err)
			}
		}
		if l, h, err := parsePortRange(strconv.Itoa(hi)); err != nil || l != hi || h != hi {
			t.Fatalf("parsePortRange(%q) = %d, %d, %v; want one port", strconv.Itoa(hi), l, h, err)
		}
	})
}

// FuzzCheckListenAddr: --admin, --dns, --http. What it accepts, the
// standard library resolves to the same port without DNS (an address
// pacer accepts at start must not fail later, in net.Listen, as a
// syntax error); every IP address and port is accepted.
func FuzzCheckListenAddr(f *testing.F) {
	for _, s := range []string{":9090", "127.0.0.1:9090", "[::1]:53", "localhost:80", "0.0.0.0:0", ":http", "9090", "host:80", "[fe80::1%eth0]:80", ":+80", ":-0", ":65536"} {
		f.Add(s, []byte{127, 0, 0, 1}, uint16(9090))
	}
	f.Fuzz(func(t *testing.T, addr string, ip []byte, port uint16) {
		if err := checkListenAddr(addr); err == nil {
			host, p, _ := net.SplitHostPort(addr)
			if host == "localhost" {
				host = "127.0.0.1" // resolving it is the resolver's business
			}
			a, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, p))
			if err != nil {
				t.Fatalf("checkListenAddr(%q) accepted what net rejects: %v", addr, err)
			}
			if n, _ := strconv.Atoi(p); a.Port != n {
				t.Fatalf("checkListenAddr(%q) accepted port %q, net reads %d", addr, p, a.Port)
			}
		} else if !strings.Contains(err.Error(), strconv.Quote(addr)) {
			t.Errorf("checkListenAddr(%q): error %q does not quote the value", addr, err)
		}
		var a netip.Addr
		switch len(ip) {
		case 4:
			a = netip.AddrFrom4([4]byte(ip))
		case 16:
			a = netip.AddrFrom16([16]byte(ip))
		default:
			return
		}
		for _, in := range []string{netip.AddrPortFrom(a, port).String(), fmt.Sprintf(":%d", port)} {
			if err := checkListenAddr(in); err != nil {
				t.Fatalf("checkListenAddr(%q): %v", in, err)
			}
		}
	})
}
