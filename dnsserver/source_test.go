package dnsserver

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A server on a wildcard address (the default --dns :8053) answers from the
// address the query was sent to. The kernel would otherwise pick the source
// by the route back to the client: a query to an agent's second address, or
// from a container on a Docker bridge to the agent's address, got its answer
// from another address, which resolvers (glibc, Go's, miekg/dns's: connected
// sockets) drop as not from the server they asked, and time out. 127.0.0.2
// is such a second address: the route back to 127.0.0.1 leaves from
// 127.0.0.1.
func TestUDPAnswersFromTheAddressAsked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		plain bool
	}{{"batched UDP", false}, {"plain UDP", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, udp, _ := runServer(t, fixtureTable(), func(s *Server) {
				s.cfg.Addr = ":0"
				s.plainUDP = tc.plain
			})
			_, port, err := net.SplitHostPort(udp)
			if err != nil {
				t.Fatal(err)
			}
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			for _, host := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.1", "::1"} {
				addr := net.JoinHostPort(host, port)
				r, _, err := c.Exchange(question("web-shop.marathon.mesos.", dns.TypeA), addr)
				if err != nil {
					t.Fatalf("query to %s: %v", addr, err)
				}
				if len(r.Answer) != 2 {
					t.Fatalf("query to %s: %v", addr, r)
				}
			}
		})
	}
}
