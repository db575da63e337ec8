package health

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// Log field keys.
const (
	keyBackend = "backend"
)

// Checker keeps pacer's own verdict on every backend the table lists and
// publishes it as the table's health overlay. See the package doc.
type Checker struct {
	cfg   Config
	table *discovery.Table
	log   *zap.Logger

	// index finds a target by address for Report; it is replaced, never
	// modified, whenever the set of addresses changes.
	index atomic.Pointer[map[netip.AddrPort]*target]
	// kick wakes Run after a verdict changed; one pending wakeup is enough.
	kick chan struct{}

	mu      sync.Mutex // guards targets, apps, ctx; never held while probing
	targets map[netip.AddrPort]*target
	// apps holds, per app id, the raw app last synced and the addresses it
	// contributed, so a snapshot that did not touch an app costs a pointer
	// comparison.
	apps map[string]syncedApp
	ctx  context.Context // the probers' parent: Run's

	wg sync.WaitGroup // probers

	stats struct{ probesOK, probesFailed, ejections atomic.Uint64 }
	// published is the ejection set last handed to the table; Run only.
	published map[netip.AddrPort]string
}

type syncedApp struct {
	app   *discovery.App
	addrs []netip.AddrPort
}

// New returns a Checker for table. It probes nothing until Run.
func New(cfg Config, table *discovery.Table, log *zap.Logger) (*Checker, error) {
	if table == nil {
		return nil, errors.New("health: nil table")
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Checker{
		cfg:       cfg,
		table:     table,
		log:       log.Named("health"),
		kick:      make(chan struct{}, 1),
		targets:   map[netip.AddrPort]*target{},
		apps:      map[string]syncedApp{},
		published: map[netip.AddrPort]string{},
	}
	empty := map[netip.AddrPort]*target{}
	c.index.Store(&empty)
	return c, nil
}

// wake asks Run to publish; it never blocks.
func (c *Checker) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run follows the table until ctx is done: it keeps a target per backend
// address, runs the probers, ends passive ejections when their time is up,
// and publishes the ejection set with Table.SetEjected. On return the
// probers have stopped. It returns nil. Call it once.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for _, t := range c.targets {
			c.stopProber(t)
		}
		c.mu.Unlock()
		c.wg.Wait()
		if np, ok := c.cfg.Prober.(*NetProber); ok {
			np.Close()
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		snap := c.table.Snapshot()
		c.sync(snap)
		next := c.publish()
		timer.Reset(time.Hour)
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-snap.Changed():
		case <-c.kick:
		case <-timer.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// sync brings the targets in line with snap's raw backends: a target per
// address, with the checks of the services routing to it.
func (c *Checker) sync(snap *discovery.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	touched := map[netip.AddrPort]bool{}
	seen := make(map[string]bool, len(c.apps))
	for _, a := range snap.RawApps() {
		seen[a.ID] = true
		prev, ok := c.apps[a.ID]
		if ok && prev.app == a {
			continue // published apps are immutable: same pointer, same backends
		}
		c.unref(a.ID, prev.addrs, touched)
		var addrs []netip.AddrPort
		for _, s := range a.Services {
			for _, b := range s.Backends {
				t := c.targets[b.Addr]
				if t == nil {
					t = newTarget(b.Addr, now)
					c.targets[b.Addr] = t
				}
				t.mu.Lock()
				t.refs[s.Key] = s.Check
				t.mu.Unlock()
				addrs = append(addrs, b.Addr)
				touched[b.Addr] = true
			}
		}
		c.apps[a.ID] = syncedApp{app: a, addrs: addrs}
	}
	for id, sa := range c.apps {
		if !seen[id] {
			c.unref(id, sa.addrs, touched)
			delete(c.apps, id)
		}
	}
	if len(touched) == 0 {
		return
	}
	gone := false
	for addr := range touched {
		t := c.targets[addr]
		t.mu.Lock()
		if len(t.refs) == 0 {
			t.mu.Unlock()
			c.stopProber(t)
			delete(c.targets, addr)
			gone = true
			continue
		}
		check := chooseCheck(t.refs)
		same := reflect.DeepEqual(check, t.check)
		t.mu.Unlock()
		if !same {
			c.startProber(t, check)
		}
	}
	// A new index only when the set of addresses changed.
	if old := *c.index.Load(); gone || len(old) != len(c.targets) {
		idx := maps.Clone(c.targets)
		c.index.Store(&idx)
	}
}

// unref removes app id's references from addrs' targets.
func (c *Checker) unref(id string, addrs []netip.AddrPort, touched map[netip.AddrPort]bool) {
	for _, addr := range addrs {
		if t := c.targets[addr]; t != nil {
			t.mu.Lock()
			for k := range t.refs {
				if k.App == id {
					delete(t.refs, k)
				}
			}
			t.mu.Unlock()
			touched[addr] = true
		}
	}
}

// chooseCheck picks the check a backend's prober runs when several services
// route to it: an HTTP(S) check over a TCP one, then the lowest service key,
// so the choice never depends on map order.
func chooseCheck(refs map[discovery.ServiceKey]*discovery.HealthCheck) *discovery.HealthCheck {
	keys := slices.SortedFunc(maps.Keys(refs), func(a, b discovery.ServiceKey) int {
		if c := cmp.Compare(a.App, b.App); c != 0 {
			return c
		}
		return cmp.Compare(a.PortIndex, b.PortIndex)
	})
	var best *discovery.HealthCheck
	for _, k := range keys {
		hc := refs[k]
		if hc != nil && (best == nil || (best.Protocol == discovery.CheckTCP && hc.Protocol != discovery.CheckTCP)) {
			best = hc
		}
	}
	return best
}

// startProber (re)starts t's prober for check (none if nil). Called with
// c.mu held.
func (c *Checker) startProber(t *target, check *discovery.HealthCheck) {
	c.stopProber(t)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.check = check
	t.okRun, t.failRun = 0, 0
	if t.activeDown {
		// A new check starts from the source's word, like a new backend.
		t.activeDown, t.activeReason = false, ""
		if c.verdictLocked(t, time.Now()) {
			c.wake()
		}
	}
	if check == nil || c.ctx == nil || c.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	t.cancel = cancel
	c.wg.Add(1)
	go c.probeLoop(ctx, t, check)
}

// stopProber stops t's prober, if any. Called with c.mu held.
func (c *Checker) stopProber(t *target) {
	t.mu.Lock()
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
	t.mu.Unlock()
}

// publish ends the passive ejections whose time is up, hands the ejection
// set to the table if it changed, and returns when the next ejection ends
// (zero if none is running).
func (c *Checker) publish() time.Time {
	now := time.Now()
	ejected := map[netip.AddrPort]string{}
	var next time.Time
	c.mu.Lock()
	for addr, t := range c.targets {
		t.mu.Lock()
		c.verdictLocked(t, now)
		if !t.healthy {
			ejected[addr] = t.reason
		}
		if u := t.ejectedUntil; !u.IsZero() && (next.IsZero() || u.Before(next)) {
			next = u
		}
		t.mu.Unlock()
	}
	c.mu.Unlock()
	if !maps.Equal(ejected, c.published) {
		c.published = ejected
		c.table.SetEjected(maps.Clone(ejected))
		if c.cfg.OnPublish != nil {
			c.cfg.OnPublish(ejected)
		}
	}
	return next
}

// jitter returns d moved by up to ±share·d at random (share 1: anywhere in [0, d)).
func (c *Checker) jitter(d time.Duration, share float64) time.Duration {
	if share >= 1 {
		return rand.N(d)
	}
	span := time.Duration(float64(d) * share)
	if span <= 0 {
		return d
	}
	return d - span + rand.N(2*span)
}
