package discovery

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// LookupHost resolves an agent or member host name with the system resolver
// and prefers an IPv4 address, as marathon-lb's gethostbyname does: agents
// with both families are reached the way the rest of the cluster reaches them.
// Sources call it on their own goroutines, never on a data path.
func LookupHost(ctx context.Context, host string) (netip.Addr, error) {
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("no address for %s", host)
	}
	return addrs[0], nil
}
