package zookeeper

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// Task states shown in /v1/services for members that are not routable for
// a reason of their own (serverset members show their own status).
const (
	stateMalformed  = "MALFORMED"
	stateUnreadable = "UNREADABLE"
)

// serviceWatch follows one --zk-service on its own goroutine (run): it
// keeps a children watch on the service path and a data watch on each
// member, reads what changed, and applies the service's App to the table,
// coalesced by a token bucket.
type serviceWatch struct {
	src  *Source
	sess *session
	spec ServiceSpec
	log  *zap.Logger
	wg   *sync.WaitGroup // counts the member watch forwarders

	dir     dirWatch
	members map[string]*member
	events  chan memberEvent // member data watches fire here
	gen     uint64           // last watch generation handed out

	expiries uint64 // session expiries seen; a new one means all watches are gone

	// Publishing.
	synced    bool      // read completely at least once
	dirty     bool      // members changed since the last apply
	published bool      // applied at least once
	tokens    float64   // token bucket for applies
	refilled  time.Time // when tokens was last topped up
	timer     *time.Timer
	timerC    <-chan time.Time
}

// member is what the watcher knows of one member node.
type member struct {
	name     string
	gen      uint64 // generation of the armed data watch
	watching bool   // a data watch is armed
	data     []byte
	task     discovery.TaskState
	backend  *discovery.Backend // nil when not routable
	// unresolved is set while the member's host does not resolve: its
	// node's data will not change for that, so run tries it again.
	unresolved bool
}

// memberEvent is a member's data watch firing.
type memberEvent struct {
	name string
	gen  uint64
	ev   zk.Event
}

func newServiceWatch(s *Source, sess *session, spec ServiceSpec, wg *sync.WaitGroup) *serviceWatch {
	return &serviceWatch{
		src:     s,
		sess:    sess,
		spec:    spec,
		log:     s.log.With(zap.String(keyService, spec.Name), zap.String(keyPath, spec.Path)),
		wg:      wg,
		dir:     dirWatch{path: spec.Path},
		members: map[string]*member{},
		events:  make(chan memberEvent, 64),
		tokens:  float64(s.cfg.CoalesceBurst),
	}
}

// run is the service's goroutine. It returns an error only when the first
// read is refused for good.
func (sw *serviceWatch) run(ctx context.Context) error {
	defer func() {
		if sw.timer != nil {
			sw.timer.Stop()
		}
	}()
	backoff := retryMin
	needRead, resync := true, true
	// Members whose host did not resolve are resolved again on a timer of
	// their own, backing off while they still fail.
	resolveWait := resolveRetryMin
	var resolveTimer *time.Timer
	var resolveC <-chan time.Time
	defer func() {
		if resolveTimer != nil {
			resolveTimer.Stop()
		}
	}()
	for {
		if needRead {
			if _, exp := sw.sess.counts(); exp != sw.expiries {
				// The session expired: every watch is gone; read all.
				sw.expiries, resync = exp, true
				for _, m := range sw.members {
					m.watching = false
				}
			}
			err := sw.sync(ctx)
			switch {
			case err == nil:
				needRead, sw.synced, backoff = false, true, retryMin
				sw.src.markSynced(sw.spec.Name, resync)
				resync = false
			case !sw.synced && (errors.Is(err, zk.ErrNoAuth) || errors.Is(err, zk.ErrAuthFailed)):
				return fmt.Errorf("zookeeper: --zk-service %s: %w", sw.spec, err)
			case ctx.Err() != nil:
				return nil
			default:
				sw.src.recordError(fmt.Errorf("service %s: %w", sw.spec.Name, err))
				if !transient(err) {
					sw.log.Warn("reading service members failed; keeping the last ones", zap.Error(err))
				}
				// Publish what was read, then read again once connected.
				sw.publish(time.Now())
				if !sw.sess.retryWait(ctx, backoff) {
					return nil
				}
				backoff = nextBackoff(backoff)
				continue
			}
		}
		sw.publish(time.Now())
		if resolveC == nil && sw.unresolved() {
			resolveTimer = time.NewTimer(resolveWait)
			resolveC = resolveTimer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-resolveC:
			resolveC = nil
			if sw.resolveAgain(ctx) {
				resolveWait = resolveRetryMin
			} else {
				resolveWait = min(2*resolveWait, resolveRetryMax)
			}
		case <-sw.dir.ch:
			sw.dir.fired()
			sw.src.count(1, 0)
			needRead = true
		case me := <-sw.events:
			needRead = sw.memberEvent(me) || needRead
			// Take every event already queued before reading, so a burst
			// (all members after an expiry) costs one read.
			for more := true; more; {
				select {
				case me := <-sw.events:
					needRead = sw.memberEvent(me) || needRead
				default:
					more = false
				}
			}
		case <-sw.timerC:
			sw.timerC = nil
		}
	}
}

// memberEvent notes that a member's data watch fired; it reports whether
// the member must be read again.
func (sw *serviceWatch) memberEvent(me memberEvent) bool {
	m := sw.members[me.name]
	if m == nil || m.gen != me.gen {
		return false // a watch of a member since removed or re-read
	}
	sw.src.count(1, 0)
	m.watching = false
	return true
}

// sync lists the members, reads those without an armed data watch (new,
// changed, or all of them after an expiry), and drops the ones gone.
func (sw *serviceWatch) sync(ctx context.Context) error {
	conn := sw.sess.conn
	children, err := sw.dir.list(conn)
	if err != nil {
		return fmt.Errorf("listing %s: %w", sw.spec.Path, err)
	}
	present := make(map[string]bool, len(children))
	var toRead []string
	for _, c := range children {
		present[c] = true
		if m := sw.members[c]; m == nil || !m.watching {
			toRead = append(toRead, c)
		}
	}
	for name := range sw.members {
		if !present[name] {
			delete(sw.members, name)
			sw.dirty = true
		}
	}
	type result struct {
		name string
		data []byte
		ch   <-chan zk.Event
		err  error
	}
	results := make([]result, len(toRead))
	sem := make(chan struct{}, readParallel)
	var rwg sync.WaitGroup
	for i, name := range toRead {
		rwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer rwg.Done()
			defer func() { <-sem }()
			data, _, ch, err := conn.GetW(join(sw.spec.Path, name))
			results[i] = result{name, data, ch, err}
		}()
	}
	rwg.Wait()
	var firstErr error
	var malformed uint64
	for _, r := range results {
		switch {
		case errors.Is(r.err, zk.ErrNoNode):
			// Deleted since the listing; the children watch fires too.
			if sw.members[r.name] != nil {
				delete(sw.members, r.name)
				sw.dirty = true
			}
			continue
		case r.err != nil && transient(r.err):
			if firstErr == nil {
				firstErr = fmt.Errorf("reading %s: %w", join(sw.spec.Path, r.name), r.err)
			}
			continue
		}
		m := sw.members[r.name]
		if m == nil {
			m = &member{name: r.name}
			sw.members[r.name] = m
		}
		if r.err != nil {
			// This node alone cannot be read (an ACL): it is shown, not
			// routed, and read again on the service's next change.
			reason := "unreadable member node: " + r.err.Error()
			if m.task.Reason != reason {
				sw.log.Warn("skipping unreadable member", zap.String(keyMember, r.name), zap.Error(r.err))
				m.task = discovery.TaskState{ID: r.name, State: stateUnreadable, Reason: reason}
				m.backend, m.data = nil, nil
				sw.dirty = true
			}
			continue
		}
		sw.gen++
		m.gen, m.watching = sw.gen, true
		sw.forward(ctx, r.name, m.gen, r.ch)
		if m.data != nil && bytes.Equal(m.data, r.data) {
			continue
		}
		m.data = r.data
		if !sw.decode(ctx, m) {
			malformed++
		}
		sw.dirty = true
	}
	sw.src.count(0, malformed)
	return firstErr
}

// forward hands a member's data watch event to run.
func (sw *serviceWatch) forward(ctx context.Context, name string, gen uint64, ch <-chan zk.Event) {
	sw.wg.Add(1)
	go func() {
		defer sw.wg.Done()
		select {
		case ev := <-ch:
			select {
			case sw.events <- memberEvent{name, gen, ev}:
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
}

// unresolved reports whether a member's host did not resolve.
func (sw *serviceWatch) unresolved() bool {
	for _, m := range sw.members {
		if m.unresolved {
			return true
		}
	}
	return false
}

// resolveAgain decodes again the members whose host did not resolve; it
// reports whether they all resolve now.
func (sw *serviceWatch) resolveAgain(ctx context.Context) bool {
	all := true
	for _, m := range sw.members {
		if !m.unresolved {
			continue
		}
		sw.decode(ctx, m)
		if m.unresolved {
			all = false
		} else {
			sw.dirty = true
			sw.log.Info("member host resolves now", zap.String(keyMember, m.name), zap.String("host", m.task.Host))
		}
	}
	return all
}

// decode parses m.data into its task state and backend. It returns false
// for malformed data, which makes that member alone unroutable.
func (sw *serviceWatch) decode(ctx context.Context, m *member) bool {
	m.backend, m.unresolved = nil, false
	mem, err := ParseMember(m.data)
	if err != nil {
		m.task = discovery.TaskState{ID: m.name, State: stateMalformed, Reason: "malformed member data: " + err.Error()}
		sw.log.Warn("skipping malformed member", zap.String(keyMember, m.name), zap.Error(err))
		return false
	}
	m.task = discovery.TaskState{ID: m.name, Host: mem.Endpoint.Host, State: mem.Status, Ports: []int{mem.Endpoint.Port}}
	if !mem.Alive() {
		m.task.Reason = "serverset status " + mem.Status
		return true
	}
	addr, err := sw.resolve(ctx, mem.Endpoint.Host)
	if err != nil {
		m.task.Reason = "resolving " + mem.Endpoint.Host + ": " + err.Error()
		m.unresolved = true
		sw.log.Warn("member host does not resolve; trying again", zap.String(keyMember, m.name), zap.Error(err))
		return true
	}
	m.task.Routable = true
	m.backend = &discovery.Backend{TaskID: m.name, Host: mem.Endpoint.Host, Addr: netip.AddrPortFrom(addr, uint16(mem.Endpoint.Port))}
	return true
}

func (sw *serviceWatch) resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return a.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	return sw.src.cfg.Resolve(ctx, host)
}

// publish applies the service to the table if it changed and the token
// bucket allows; otherwise it arms the timer for when it will.
func (sw *serviceWatch) publish(now time.Time) {
	if !sw.synced || (!sw.dirty && sw.published) {
		return
	}
	if c := sw.src.cfg.Coalesce; c > 0 && sw.published {
		burst := float64(sw.src.cfg.CoalesceBurst)
		sw.tokens = min(burst, sw.tokens+float64(now.Sub(sw.refilled))/float64(c))
		sw.refilled = now
		if sw.tokens < 1 {
			if sw.timerC == nil {
				wait := time.Duration((1 - sw.tokens) * float64(c))
				if sw.timer == nil {
					sw.timer = time.NewTimer(wait)
				} else {
					sw.timer.Reset(wait)
				}
				sw.timerC = sw.timer.C
			}
			return
		}
		sw.tokens--
	}
	sw.src.table.Apply(discovery.Update{Source: SourceName, Apps: []*discovery.App{sw.app()}})
	sw.dirty, sw.published = false, true
}

// app builds the service's App from the current members.
func (sw *serviceWatch) app() *discovery.App {
	id := AppIDPrefix + sw.spec.Name
	svc := &discovery.Service{
		Key:         discovery.ServiceKey{App: id},
		Name:        sw.spec.Name,
		ServicePort: sw.spec.ServicePort,
		Protocol:    discovery.ProtoTCP,
		Mode:        discovery.ModeTCP,
		Balance:     discovery.BalanceRoundRobin,
	}
	names := make([]string, 0, len(sw.members))
	for n := range sw.members {
		names = append(names, n)
	}
	slices.Sort(names)
	app := &discovery.App{ID: id, Source: SourceName, Services: []*discovery.Service{svc}, Tasks: make([]discovery.TaskState, 0, len(names))}
	seen := map[netip.AddrPort]string{}
	for _, n := range names {
		m := sw.members[n]
		task := m.task
		if m.backend != nil {
			// A member re-registered before its old session expired
			// shows up twice; route to the address once.
			if first, dup := seen[m.backend.Addr]; dup {
				task.Routable, task.Reason = false, "same address as member "+first
			} else {
				seen[m.backend.Addr] = n
				svc.Backends = append(svc.Backends, *m.backend)
			}
		}
		task.Ports = slices.Clone(task.Ports)
		app.Tasks = append(app.Tasks, task)
	}
	slices.SortFunc(svc.Backends, func(a, b discovery.Backend) int {
		if c := cmp.Compare(a.TaskID, b.TaskID); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	return app
}
