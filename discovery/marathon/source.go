package marathon

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// sourceName is the Update.Source and SourceStatus.Name of this source.
const sourceName = "marathon"

// appFetchParallel bounds concurrent GET /v2/apps/{id} requests, so an
// event storm touching many apps does not hammer Marathon.
const appFetchParallel = 8

// Source follows one Marathon (or an HA set of them) and keeps the apps it
// routes in a discovery.Table.
type Source struct {
	cfg    normalized
	table  *discovery.Table
	log    *zap.Logger
	client *client
	res    *resolver
	queue  *eventQueue
	resync chan struct{} // capacity 1: Resync requests coalesce
	conn   chan connNotice
	kick   chan struct{} // capacity 1: reconnect the stream now (leader changed)

	// flapErr is the error that ended the last stream to die young (shorter
	// than stableStream), or "": while streams keep dying of it, their
	// connects and ends log at debug, not three lines a cycle for as long as
	// a leader takes to settle. Only the stream goroutine uses it.
	flapErr string
	// downSaid is set once a warning said the event stream is down, until a
	// line at info says it is back: an operator who saw the one must see
	// the other, however quietly a flapping stream reconnects.
	downSaid bool

	running atomic.Bool

	mu           sync.Mutex // guards what follows
	status       discovery.SourceStatus
	evByType     map[string]uint64
	streamCancel context.CancelCauseFunc // the live stream attempt, or nil
	// fetchCtx is what fetches run under until the leader changes, when
	// fetchCancel cuts those still in flight (see newFetchEpoch). Nil
	// before Run.
	fetchCtx    context.Context
	fetchCancel context.CancelCauseFunc
}

var _ discovery.StatusReporter = (*Source)(nil)

// New validates cfg and returns a Source that will publish into table. It
// does no I/O; Run does.
func New(cfg Config, table *discovery.Table, log *zap.Logger) (*Source, error) {
	if table == nil {
		return nil, errors.New("marathon: nil table")
	}
	if log == nil {
		log = zap.NewNop()
	}
	n, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	eps, err := parseEndpoints(cfg.URLs, cfg.Token, cfg.Leader != nil)
	if err != nil {
		return nil, err
	}
	log = log.Named("marathon")
	c, err := newClient(eps, &n, log)
	if err != nil {
		return nil, err
	}
	s := &Source{
		cfg:      n,
		table:    table,
		log:      log,
		client:   c,
		res:      newResolver(cfg.Resolve),
		queue:    newEventQueue(),
		resync:   make(chan struct{}, 1),
		conn:     make(chan connNotice, 4),
		kick:     make(chan struct{}, 1),
		evByType: map[string]uint64{},
	}
	s.status.Name = sourceName
	return s, nil
}

// Resync asks for a full resync (SIGHUP, POST /v1/resync). It never blocks;
// requests made while one is pending or running coalesce into one more.
func (s *Source) Resync() {
	select {
	case s.resync <- struct{}{}:
	default:
	}
}

// Status reports the source's health. It never carries credentials.
func (s *Source) Status() discovery.SourceStatus {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	st.Endpoint = s.client.current().redacted
	st.EventsByType = s.EventsByType()
	return st
}

func (s *Source) recordError(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	s.status.LastError = s.client.scrub(err.Error())
	s.status.ErrorAt = time.Now()
	s.mu.Unlock()
}

func (s *Source) countDecodeError() {
	s.mu.Lock()
	s.status.DecodeErrors++
	s.mu.Unlock()
}

// Run follows Marathon until ctx is done, then returns nil. Marathon being
// down, slow or wrong never makes it return: it retries with backoff and
// leaves the table as it was. Run may be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("marathon: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: every goroutine started here ends first
	defer cancel()

	l := newLoop(s, ctx, &wg)
	s.newFetchEpoch(ctx, nil)
	if s.cfg.Leader != nil {
		// Know the leader before the first connection, so it is not made
		// to a configured URL only to be moved at once.
		u, changed := s.cfg.Leader()
		s.setLeader(ctx, u, true)
		wg.Go(func() { s.watchLeader(ctx, changed) })
	}
	wg.Go(func() { s.streamLoop(ctx) })
	l.run()
	return nil
}

// newFetchEpoch cuts the fetches in flight with cause (nil: none to cut)
// and starts a new epoch for those to come, under parent.
//
// A fetch still in flight to the previous leader is moot: its answer is no
// newer than the new leader's, and a leader that went away without a word
// (a partition, a crashed host) leaves it hanging for up to FetchTimeout,
// while the events of the new leader's stream wait for a snapshot that
// would only start once it ends.
func (s *Source) newFetchEpoch(parent context.Context, cause error) {
	ctx, cancel := context.WithCancelCause(parent)
	s.mu.Lock()
	old := s.fetchCancel
	s.fetchCtx, s.fetchCancel = ctx, cancel
	s.mu.Unlock()
	if old != nil {
		old(cause)
	}
}

// fetchContext returns the context a fetch starting now runs under, or
// fallback before Run.
func (s *Source) fetchContext(fallback context.Context) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fetchCtx == nil {
		return fallback
	}
	return s.fetchCtx
}

// superseded reports whether a fetch under ctx was cut by a leader change.
func superseded(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errLeaderChanged)
}

// fetchResult is what a fetch goroutine hands back to the state goroutine.
// Decoding happens in the fetch goroutine, off the event path.
type fetchResult struct {
	full    bool
	seq     uint64
	id      string       // app fetch
	app     decodedApp   // app fetch
	gone    bool         // app fetch: 404
	apps    []decodedApp // full
	skipped int          // full: apps without a readable id
	err     error
	took    time.Duration
	// superseded says the leader changed while the fetch ran, which cut
	// it (err says so): not Marathon failing, and no answer either.
	superseded bool
}

// loop is the state goroutine: it alone touches state, decides what to
// fetch, and publishes to the table.
type loop struct {
	s       *Source
	ctx     context.Context
	wg      *sync.WaitGroup
	st      *state
	b       *builder
	results chan fetchResult
	appSem  chan struct{}

	// Full resyncs.
	fullInFlight bool
	fullWanted   bool   // another full is needed once the running one ends
	retryPending bool   // a failed full waits for retryTimer
	buffering    bool   // hold events until a snapshot newer than upSeq lands
	upSeq        uint64 // sequence at the last stream (re)connect
	fullBackoff  backoff
	retryTimer   *time.Timer
	resyncTimer  *time.Timer

	// Per-app fetches, coalesced: at most one in flight per app, and one
	// more if events arrive meanwhile.
	inflight map[string]bool
	dirty    map[string]bool

	synced       bool
	problems     map[string]string // last logged problem per app
	lastFullErr  string            // so a Marathon that stays down is logged once
	lastEventErr string            // the same for a stream that sends the same garbage on each connection
	lastDoneLog  time.Time         // the last "resync done" at info (see onFull)
	// loudPending is set by a requested or periodic resync and cleared by
	// the next one that succeeds, which logs "resync done" at info. Those a
	// stream reconnect brings log at info at most once a minute: a stream
	// that keeps dying young brings one each time.
	loudPending bool
}

func newLoop(s *Source, ctx context.Context, wg *sync.WaitGroup) *loop {
	healthy, _ := lru.New[string, bool](healthyCacheSize)
	l := &loop{
		s:           s,
		ctx:         ctx,
		wg:          wg,
		st:          newState(),
		results:     make(chan fetchResult),
		appSem:      make(chan struct{}, appFetchParallel),
		fullBackoff: backoff{min: s.cfg.BackoffMin, max: s.cfg.BackoffMax},
		inflight:    map[string]bool{},
		dirty:       map[string]bool{},
		problems:    map[string]string{},
	}
	l.b = &builder{
		resolve: func(host string) (netip.Addr, error) {
			return s.res.Resolve(ctx, host)
		},
		keepUnreachable: s.cfg.keepUnreachable,
		healthy:         healthy,
	}
	return l
}

func (l *loop) run() {
	l.retryTimer = time.NewTimer(time.Hour)
	l.retryTimer.Stop()
	l.resyncTimer = time.NewTimer(l.s.cfg.ResyncInterval)
	defer l.retryTimer.Stop()
	defer l.resyncTimer.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case n := <-l.s.conn:
			l.onConn(n)
		case <-l.s.queue.notify:
			l.drain()
		case r := <-l.results:
			if r.full {
				l.onFull(r)
			} else {
				l.onApp(r)
			}
			l.startDirty()
		case <-l.s.resync:
			l.requestFull("requested")
		case <-l.resyncTimer.C:
			l.requestFull("periodic")
		case <-l.retryTimer.C:
			l.retryPending = false
			if !l.fullInFlight {
				l.startFull()
			}
		}
	}
}

func (l *loop) onConn(n connNotice) {
	switch {
	case n.up:
		// No replay: whatever happened before this subscription is only in
		// a snapshot taken after it. Hold events until that snapshot lands,
		// then apply them on top (they may repeat what it shows; applying is
		// idempotent).
		//
		// Events still queued now were read before this notice, some maybe
		// from the stream that ended, before the gap: the snapshot issued
		// below covers them. Apply them first, older than it, rather than
		// hold them and replay them on top of it as if newer, which would
		// bring back a task that died during the gap (its TASK_RUNNING, or
		// alive=true, queued; its end lost with the stream).
		l.buffering = false
		l.drain()
		l.upSeq = l.st.next()
		l.buffering = true
		if l.fullInFlight {
			l.fullWanted = true
			return
		}
		// Marathon just answered: skip any pending failure backoff.
		l.retryTimer.Stop()
		l.retryPending = false
		l.startFull()
	case n.failed:
		// The stream cannot connect. If nothing was ever synced, try the
		// snapshot anyway: routes from a snapshot beat no routes.
		if !l.synced {
			l.requestFull("event stream unavailable")
		}
	}
}

// requestFull starts a full resync unless one is running (then one more
// follows it) or a failed one is waiting out its backoff.
func (l *loop) requestFull(reason string) {
	l.s.log.Debug("full resync requested", zap.String("reason", reason))
	l.loudPending = true // see lastDoneLog
	switch {
	case l.fullInFlight:
		l.fullWanted = true
	case l.retryPending:
	default:
		l.startFull()
	}
}

func (l *loop) startFull() {
	seq := l.st.next()
	l.fullInFlight, l.fullWanted = true, false
	fctx := l.s.fetchContext(l.ctx)
	l.wg.Go(func() {
		start := time.Now()
		r := fetchResult{full: true, seq: seq}
		body, err := l.s.client.fetchApps(fctx)
		r.superseded = err != nil && superseded(fctx)
		if err == nil {
			r.apps, r.skipped, err = decodeApps(body)
			if err != nil {
				err = errors.New(err.Error() + " (GET /v2/apps)")
			}
		}
		if err == nil {
			l.s.res.warm(l.ctx, hostsOf(r.apps))
		}
		r.err, r.took = err, time.Since(start)
		select {
		case l.results <- r:
		case <-l.ctx.Done():
		}
	})
}

func hostsOf(apps []decodedApp) map[string]struct{} {
	hosts := map[string]struct{}{}
	for _, a := range apps {
		if a.Def == nil {
			continue
		}
		for _, t := range a.Def.Tasks {
			if t.Host != "" {
				hosts[t.Host] = struct{}{}
			}
		}
	}
	return hosts
}

func (l *loop) onFull(r fetchResult) {
	l.fullInFlight = false
	if r.superseded {
		// Cut by a leader change: ask the new leader at once (the reason
		// this snapshot was wanted still holds).
		l.s.log.Debug("full resync cut by a leader change; asking the new leader", zap.Error(r.err))
		l.startFull()
		return
	}
	if r.err != nil {
		// Keep the table as it is: a failing Marathon is not an empty one.
		// While events wait for this snapshot (after a reconnect) the table
		// stands still with the stream up: say so, since nothing else
		// would. Otherwise events go on applying, and the table is current.
		l.s.recordError(r.err)
		if l.buffering {
			l.s.mu.Lock()
			if l.s.status.BehindSince.IsZero() {
				l.s.status.BehindSince = time.Now()
			}
			l.s.status.Behind = "events held for a full resync (GET /v2/apps) that fails: " + l.s.client.scrub(r.err.Error())
			l.s.mu.Unlock()
		}
		d := l.fullBackoff.next()
		log := l.s.log.Warn
		if msg := r.err.Error(); msg == l.lastFullErr || errors.Is(r.err, errNoLeaderYet) {
			log = l.s.log.Debug // said once; the stream says it waits for a leader
		} else {
			l.lastFullErr = msg
		}
		log("full resync failed; keeping the last table", zap.Error(r.err), zap.Duration("retry_in", d.Round(time.Millisecond)))
		l.retryPending = true
		l.retryTimer.Reset(d)
		return
	}
	l.fullBackoff.reset()
	l.lastFullErr = ""
	if r.skipped > 0 {
		l.s.mu.Lock()
		l.s.status.DecodeErrors += uint64(r.skipped)
		l.s.mu.Unlock()
		l.s.log.Warn("apps without a readable id skipped", zap.Int("count", r.skipped))
	}
	applyStart := time.Now()
	l.st.applyFull(r.apps, r.seq)
	apps := l.publishAll()
	applied := time.Since(applyStart)
	tasks := 0
	for _, a := range apps {
		tasks += len(a.Tasks)
	}
	l.synced = true
	l.s.mu.Lock()
	l.s.status.Synced = true
	l.s.status.LastSync = time.Now()
	l.s.status.Resyncs++
	// A complete view from Marathon ends any lag (LastError stays, with its
	// time, as history: see the status page).
	l.s.status.Behind, l.s.status.BehindSince = "", time.Time{}
	l.s.mu.Unlock()
	// fetch_decode is the GET and JSON decoding (off the state goroutine);
	// apply is building the apps and publishing the table.
	done := l.s.log.Debug
	if now := time.Now(); l.loudPending || now.Sub(l.lastDoneLog) >= time.Minute {
		done, l.lastDoneLog, l.loudPending = l.s.log.Info, now, false
	}
	done("resync done", zap.Int("apps", len(apps)), zap.Int("tasks", tasks),
		zap.Duration("fetch_decode", r.took), zap.Duration("apply", applied))
	l.resyncTimer.Reset(l.s.cfg.ResyncInterval)
	if l.buffering && r.seq > l.upSeq {
		l.buffering = false
		l.drain()
	}
	if l.fullWanted {
		l.startFull()
	}
}

// want marks an app for a fetch; startDirty starts them.
func (l *loop) want(id string) { l.dirty[id] = true }

func (l *loop) startDirty() {
	for id := range l.dirty {
		if l.inflight[id] {
			continue // fetched again when the running fetch ends
		}
		delete(l.dirty, id)
		l.inflight[id] = true
		seq := l.st.next()
		fctx := l.s.fetchContext(l.ctx)
		l.wg.Go(func() {
			r := fetchResult{id: id, seq: seq}
			select {
			case l.appSem <- struct{}{}:
			case <-l.ctx.Done():
				return
			}
			start := time.Now()
			body, gone, err := l.s.client.fetchApp(fctx, id)
			<-l.appSem
			r.superseded = err != nil && superseded(fctx)
			if err == nil && !gone {
				r.app, err = decodeAppResponse(body)
				if err == nil && r.app.ID != id {
					// Marathon answers for the id asked; anything else is a
					// proxy or version surprise not to be trusted.
					err = errors.New("GET /v2/apps" + id + " answered with app " + r.app.ID)
				}
				if err == nil {
					l.s.res.warm(l.ctx, hostsOf([]decodedApp{r.app}))
				}
			}
			r.gone, r.err, r.took = gone, err, time.Since(start)
			select {
			case l.results <- r:
			case <-l.ctx.Done():
			}
		})
	}
}

func (l *loop) onApp(r fetchResult) {
	delete(l.inflight, r.id)
	if r.superseded {
		l.want(r.id) // ask the new leader (run starts it)
		return
	}
	if r.err != nil {
		l.s.recordError(r.err)
		l.s.log.Warn("app fetch failed; resyncing", zap.String("app", r.id), zap.Error(r.err))
		l.requestFull("app fetch failed")
		return
	}
	var changed bool
	if r.gone {
		changed = l.st.removeFetched(r.id, r.seq)
	} else {
		changed = l.st.mergeFetched(r.app, r.seq)
	}
	l.s.log.Debug("app fetched", zap.String("app", r.id), zap.Bool("gone", r.gone),
		zap.Bool("applied", changed), zap.Duration("took", r.took))
	if changed {
		l.publish(r.id)
	}
}

// drain applies every queued event, unless events are being held for a
// snapshot.
func (l *loop) drain() {
	if l.buffering {
		return
	}
	items, overflow := l.s.queue.Take()
	if overflow {
		l.s.log.Warn("events lost (queue overflow or oversize event); resyncing")
		l.requestFull("events lost")
	}
	for _, data := range items {
		l.handleEvent(data)
	}
	l.startDirty()
}

func (l *loop) handleEvent(data []byte) {
	var ev event
	if err := json.Unmarshal(data, &ev); err != nil {
		// Marathon before 1.3.7 ignores event_type and sends every event;
		// one pacer does not act on may not fit the event struct, and is
		// no reason to resync.
		var typ struct {
			EventType string `json:"eventType"`
		}
		if json.Unmarshal(data, &typ) == nil {
			l.s.countEvent(typ.EventType)
			if !relevant(typ.EventType) {
				return
			}
		}
		l.s.countDecodeError()
		log := l.s.log.Warn
		if msg := err.Error(); msg == l.lastEventErr {
			log = l.s.log.Debug // the same garbage again, as on every reconnect
		} else {
			l.lastEventErr = msg
		}
		log("cannot decode event; resyncing", zap.Error(err), zap.Int("bytes", len(data)))
		l.requestFull("undecodable event")
		return
	}
	l.lastEventErr = ""
	l.s.countEvent(ev.EventType)
	if !relevant(ev.EventType) {
		return
	}
	if isHealthEvent(ev.EventType) {
		id, changed, fetch := l.st.applyHealth(&ev, l.st.next())
		l.s.log.Debug("health event", zap.String("type", ev.EventType), zap.String("app", id),
			zap.Bool("applied", changed), zap.Bool("fetch", fetch))
		if changed {
			l.publish(id)
		}
		switch {
		case fetch && id != "":
			l.want(id)
		case fetch:
			l.requestFull(ev.EventType + " names no app")
		}
		return
	}
	if ev.EventType == evStatusUpdate {
		id, changed, fetch := l.st.applyStatus(&ev, l.st.next())
		l.s.log.Debug("status update", zap.String("app", id), zap.String("task", ev.TaskID),
			zap.String("status", ev.TaskStatus), zap.Bool("fetch", fetch))
		if changed {
			l.publish(id)
		}
		if fetch {
			l.want(id)
		}
		return
	}
	ids, ok := ev.appIDs()
	l.s.log.Debug("event", zap.String("type", ev.EventType), zap.Strings("apps", ids))
	if !ok {
		l.requestFull(ev.EventType + " names no app")
		return
	}
	for _, id := range ids {
		l.want(id)
	}
}

// served builds the app if this source routes it, else returns nil.
func (l *loop) served(id string) *discovery.App {
	a := l.st.apps[id]
	cfg := &l.s.cfg
	if a == nil || (cfg.SelfAppID != "" && id == cfg.SelfAppID) {
		return nil
	}
	if a.def == nil {
		if a.problem != "" && cfg.allGroups {
			// Its labels are unknown, so only an all-groups pacer shows it.
			return &discovery.App{ID: id, Source: sourceName, Problem: a.problem}
		}
		return nil
	}
	if !cfg.allGroups {
		groups, _ := appGroups(a.def.Labels)
		match := false
		for _, g := range groups {
			if cfg.groups[g] {
				match = true
				break
			}
		}
		if !match {
			return nil
		}
	}
	tasks := make([]*task, 0, len(a.tasks))
	for _, e := range a.tasks {
		tasks = append(tasks, e.t)
	}
	return l.b.build(a.def, tasks)
}

// noteProblem logs an app's problem when it appears or changes.
func (l *loop) noteProblem(id string, app *discovery.App) {
	p := ""
	if app != nil {
		p = app.Problem
	}
	if p == l.problems[id] {
		return
	}
	if p == "" {
		delete(l.problems, id)
		l.s.log.Info("app understood again", zap.String("app", id))
		return
	}
	l.problems[id] = p
	if strings.HasPrefix(p, decodeProblem) {
		l.s.countDecodeError() // not a bad label: pacer_app_problems counts those
	}
	l.s.log.Warn("app not routed", zap.String("app", id), zap.String("problem", p))
}

// publish pushes one app's current state (or its removal) to the table.
func (l *loop) publish(id string) {
	app := l.served(id)
	l.noteProblem(id, app)
	u := discovery.Update{Source: sourceName}
	if app == nil {
		u.Removed = []string{id}
	} else {
		u.Apps = []*discovery.App{app}
	}
	l.s.table.Apply(u)
}

// publishAll pushes every served app as a Full update and returns them.
func (l *loop) publishAll() []*discovery.App {
	apps := make([]*discovery.App, 0, len(l.st.apps))
	for id := range l.st.apps {
		app := l.served(id)
		l.noteProblem(id, app)
		if app != nil {
			apps = append(apps, app)
		}
	}
	for id := range l.problems {
		if l.st.apps[id] == nil {
			delete(l.problems, id)
		}
	}
	l.s.table.Apply(discovery.Update{Source: sourceName, Full: true, Apps: apps})
	return apps
}
