package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/discovery/marathon"
	"github.com/pacer-lb/pacer/discovery/zookeeper"
)

// sources are what feeds the table: Marathon (found through ZooKeeper with
// --marathon zk://...) and the --zk-service members.
type sources struct {
	marathon *marathon.Source
	leader   *zookeeper.LeaderWatcher // nil unless --marathon zk://
	zk       *zookeeper.Source        // nil unless --zk-service
}

func newSources(cfg *config, table *discovery.Table, log *zap.Logger) (*sources, error) {
	s := &sources{}
	mc := marathon.Config{
		URLs:            cfg.marathon,
		Token:           cfg.marathonToken,
		CAFile:          cfg.marathonCA,
		Groups:          cfg.groups,
		KeepUnreachable: &cfg.keepUnreachable,
		SelfAppID:       cfg.selfAppID,
	}
	if cfg.marathonZK != nil {
		lw, err := zookeeper.NewLeaderWatcher(*cfg.marathonZK, log)
		if err != nil {
			return nil, fmt.Errorf("--marathon: %w", err)
		}
		s.leader = lw
		mc.Leader = lw.Watch
	}
	var err error
	if s.marathon, err = marathon.New(mc, table, log); err != nil {
		return nil, fmt.Errorf("--marathon: %w", err)
	}
	if len(cfg.zkServices) > 0 {
		if s.zk, err = zookeeper.New(zookeeper.Config{Servers: cfg.zkServers, Services: cfg.zkServices}, table, log); err != nil {
			return nil, fmt.Errorf("--zk-service: %w", err)
		}
	}
	return s, nil
}

// reporters are the sources /healthz and /metrics report on; readiness waits
// for every one of them to sync.
func (s *sources) reporters() []discovery.StatusReporter {
	r := []discovery.StatusReporter{s.marathon}
	if s.leader != nil {
		r = append(r, s.leader)
	}
	if s.zk != nil {
		r = append(r, s.zk)
	}
	return r
}

// start runs every source on goRun.
func (s *sources) start(ctx context.Context, goRun func(string, func() error)) {
	goRun("marathon", func() error { return s.marathon.Run(ctx) })
	if s.leader != nil {
		goRun("marathon leader in zookeeper", func() error { return s.leader.Run(ctx) })
	}
	if s.zk != nil {
		goRun("zookeeper services", func() error { return s.zk.Run(ctx) })
	}
}

// resync asks Marathon for a full resync (SIGHUP, POST /v1/resync).
func (s *sources) resync() { s.marathon.Resync() }

// newAnnouncer registers this instance under --zk-announce with its admin
// endpoint as the serviceEndpoint and DNS beside it.
func newAnnouncer(cfg *config, adminAddr, dnsAddr net.Addr, log *zap.Logger) (*zookeeper.Announcer, error) {
	host := cfg.advertise.String()
	ep := func(a net.Addr) zookeeper.Endpoint {
		_, p, _ := net.SplitHostPort(a.String())
		n, _ := strconv.Atoi(p)
		return zookeeper.Endpoint{Host: host, Port: n}
	}
	add := map[string]zookeeper.Endpoint{"admin": ep(adminAddr)}
	if dnsAddr != nil {
		add["dns"] = ep(dnsAddr)
	}
	a, err := zookeeper.NewAnnouncer(zookeeper.AnnounceConfig{
		Servers:    cfg.zkServers,
		Path:       cfg.zkAnnounce,
		Service:    ep(adminAddr),
		Additional: add,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("--zk-announce: %w", err)
	}
	return a, nil
}
