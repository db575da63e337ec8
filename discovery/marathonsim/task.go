package marathonsim

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// taskHost is every task's agent host: tasks listen on loopback.
const taskHost = "127.0.0.1"

func taskIPs() []obj {
	return []obj{{{"ipAddress", taskHost}, {"protocol", "IPv4"}}}
}

// TaskFunc runs one task's process. ln is the task's first port, a real
// listener on 127.0.0.1:0 (the rest are in EnvFrom(ctx).Listeners). ctx is
// cancelled when Marathon kills the task; returning means the process exited,
// and the simulator reports TASK_FINISHED and schedules a replacement.
type TaskFunc func(ctx context.Context, ln net.Listener, taskID string)

// TaskEnv is what Marathon hands a task's process in its environment.
type TaskEnv struct {
	AppID     string         // MARATHON_APP_ID
	TaskID    string         // MESOS_TASK_ID
	Host      string         // HOST
	Ports     []int          // PORT0, PORT1, ...
	Listeners []net.Listener // one per port, in order; Listeners[0] is the TaskFunc's ln
}

type envKey struct{}

// EnvFrom returns the environment of the task whose TaskFunc got ctx.
func EnvFrom(ctx context.Context) (TaskEnv, bool) {
	env, ok := ctx.Value(envKey{}).(TaskEnv)
	return env, ok
}

// task is one Marathon task and its process. Fields are guarded by Server.mu
// except where noted.
type task struct {
	app         *app
	id          string
	instanceID  string
	incarnation int
	agent       string
	version     time.Time // the app version it was launched with
	state       string    // REST state, e.g. TASK_RUNNING
	stagedAt    time.Time
	startedAt   time.Time
	health      *healthResult // nil until the first check result
	lns         []*trackingListener
	ports       []int
	cancel      context.CancelFunc
	// stopped is set when the simulator stopped the process (kill, abrupt
	// death, Close); the TaskFunc returning then is not a task exit.
	stopped bool
	gone    bool // removed from its app; terminal
	killOpt *KillOptions
}

type healthResult struct {
	alive        bool
	failures     int
	firstSuccess time.Time
	lastSuccess  time.Time
	lastFailure  time.Time
	cause        string
}

func (t *task) portsJSON() []int {
	if t.ports == nil {
		return []int{}
	}
	return t.ports
}

// instance is an instance id and the incarnation its next task gets.
type instance struct {
	id          string
	incarnation int
}

// newInstance names a fresh instance and its first task (§2.1).
func (s *Server) newInstance(a *app) (inst instance, uuid string) {
	uuid = newUUID()
	if s.feat.instanceIDs {
		return instance{safeAppID(a.id) + ".instance-" + uuid, 1}, uuid
	}
	return instance{safeAppID(a.id) + ".marathon-" + uuid, 1}, uuid
}

// launchLocked starts one task of a: listeners, TASK_STAGING, TASK_STARTING,
// the process, TASK_RUNNING, then the health probe if the app has one.
// reuse, when set, is an instance whose previous task ended (1.8+ relaunches
// it with the next incarnation).
func (s *Server) launchLocked(quiet bool, a *app, reuse *instance) error {
	lns := make([]*trackingListener, 0, len(a.servicePorts))
	ports := make([]int, 0, len(a.servicePorts))
	for range a.servicePorts {
		ln, err := net.Listen("tcp", net.JoinHostPort(taskHost, "0"))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("marathonsim: launching a task of %s: %w", a.id, err)
		}
		tl := newTrackingListener(ln)
		lns = append(lns, tl)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	t := &task{
		app:      a,
		agent:    s.agents[s.nextAgent%len(s.agents)],
		version:  a.version,
		state:    "TASK_STAGING",
		stagedAt: time.Now(),
		lns:      lns,
		ports:    ports,
	}
	s.nextAgent++
	switch {
	case s.feat.instanceIDs && reuse != nil:
		t.instanceID, t.incarnation = reuse.id, reuse.incarnation
		t.id = reuse.id + "._app." + strconv.Itoa(reuse.incarnation)
	case s.feat.instanceIDs:
		inst, _ := s.newInstance(a)
		t.instanceID, t.incarnation = inst.id, 1
		t.id = inst.id + "._app.1"
	default:
		inst, uuid := s.newInstance(a)
		t.instanceID = inst.id
		t.id = safeAppID(a.id) + "." + uuid
	}
	a.tasks = append(a.tasks, t)
	s.emitStatusLocked(quiet, t, "TASK_STAGING", "")

	env := TaskEnv{AppID: a.id, TaskID: t.id, Host: taskHost, Ports: ports}
	for _, l := range lns {
		env.Listeners = append(env.Listeners, l)
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), envKey{}, env))
	t.cancel = cancel
	t.state = "TASK_STARTING"
	s.emitStatusLocked(quiet, t, "TASK_STARTING", "")
	s.wg.Add(1)
	go s.runTask(ctx, t, a.spec.Run, lns[0])
	t.state = "TASK_RUNNING"
	t.startedAt = time.Now()
	s.emitStatusLocked(quiet, t, "TASK_RUNNING", "")
	if hc := a.spec.HealthCheck; hc != nil {
		s.wg.Add(1)
		go s.probe(ctx, quiet, t, *hc, ports[hc.PortIndex])
	}
	return nil
}

// runTask is a task's process: the TaskFunc, then what its exit means.
func (s *Server) runTask(ctx context.Context, t *task, run TaskFunc, ln net.Listener) {
	defer s.wg.Done()
	run(ctx, ln, t.id)
	s.taskExited(t)
}

// taskExited handles a TaskFunc that returned. If the simulator stopped the
// process, the kill already reported the ending. Otherwise the process
// exited by itself: TASK_FINISHED, or, during a kill's grace period, the end
// of that kill.
func (s *Server) taskExited(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.stopped || t.gone || s.closed {
		return
	}
	// A process that exits leaves nothing listening or connected.
	s.stopProcessLocked(t, false)
	if t.killOpt != nil {
		s.finishKillLocked(t)
		return
	}
	s.endTaskLocked(false, t, "TASK_FINISHED", "Command exited with status 0")
	s.scheduleReconcileLocked(false, t.app)
}

// stopProcessLocked ends t's process: cancels its context and closes its
// listeners and every connection it accepted. abrupt resets connections
// (SO_LINGER 0) as a killed machine's kernel would.
func (s *Server) stopProcessLocked(t *task, abrupt bool) {
	if t.stopped {
		return
	}
	t.stopped = true
	// Connections go first: cancelling first would let the TaskFunc close
	// them gracefully, and an abrupt death must reset them.
	for _, l := range t.lns {
		l.Close()
		l.closeConns(abrupt)
	}
	t.cancel()
}

// endTaskLocked reports t's terminal state and removes it from its app. On
// 1.8+ the instance is kept for the replacement's next incarnation.
func (s *Server) endTaskLocked(quiet bool, t *task, state, message string) {
	if t.gone {
		return
	}
	t.gone = true
	t.state = state
	a := t.app
	for i, x := range a.tasks {
		if x == t {
			a.tasks = append(a.tasks[:i:i], a.tasks[i+1:]...)
			break
		}
	}
	s.emitStatusLocked(quiet, t, state, message)
	if s.feat.instanceIDs {
		a.reuse = append(a.reuse, instance{t.instanceID, t.incarnation + 1})
	}
}

// finishKillLocked ends a task whose kill was requested: the process is
// stopped and its terminal state reported; the replacement follows unless
// the kill said NoRestart.
func (s *Server) finishKillLocked(t *task) {
	opt := *t.killOpt
	s.stopProcessLocked(t, false)
	state := opt.State
	if state == "" {
		state = "TASK_KILLED"
	}
	s.endTaskLocked(opt.quiet, t, state, "")
	if !opt.NoRestart {
		s.scheduleReconcileLocked(opt.quiet, t.app)
	}
}

// scheduleReconcileLocked has Marathon compare a's running tasks with its
// instance count after RestartDelay, which is when it would relaunch.
func (s *Server) scheduleReconcileLocked(quiet bool, a *app) {
	if s.restart < 0 {
		if s.apps[a.id] == a {
			s.reconcileLocked(quiet, a)
		}
		return
	}
	s.afterLocked(s.restart, func() {
		if s.apps[a.id] == a {
			s.reconcileLocked(quiet, a)
		}
	})
}

// afterLocked runs fn under s.mu after d, unless the Server closes first.
func (s *Server) afterLocked(d time.Duration, fn func()) {
	if s.closed {
		return
	}
	var tm *time.Timer
	s.wg.Add(1)
	tm = time.AfterFunc(d, func() {
		defer s.wg.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.timers[tm]; !ok {
			return // Close stopped it, or it already ran
		}
		delete(s.timers, tm)
		if !s.closed {
			fn()
		}
	})
	s.timers[tm] = struct{}{}
}

// reconcileLocked launches tasks until a has as many as it wants, reusing
// instances whose tasks ended first.
func (s *Server) reconcileLocked(quiet bool, a *app) {
	for len(a.tasks) < a.instances {
		var reuse *instance
		if len(a.reuse) > 0 {
			reuse = &a.reuse[0]
			a.reuse = a.reuse[1:]
		}
		if err := s.launchLocked(quiet, a, reuse); err != nil {
			s.logf("%v", err)
			return
		}
	}
	a.reuse = nil
}

// probe is Marathon's health check for one task: it tries until the task's
// port answers, then records the first result and reports it. It does not
// keep probing; SetHealth changes the verdict later.
func (s *Server) probe(ctx context.Context, quiet bool, t *task, hc HealthCheck, port int) {
	defer s.wg.Done()
	addr := net.JoinHostPort(taskHost, strconv.Itoa(port))
	wait := 5 * time.Millisecond
	for {
		if checkOnce(ctx, hc, addr) {
			s.mu.Lock()
			if !t.stopped && !t.gone && t.health == nil {
				s.setHealthLocked(quiet, t, true, "")
			}
			s.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// setHealthLocked records a check result and reports it when alive flips or
// it is the first result (health_status_changed_event is only sent on a
// change, §2.1).
func (s *Server) setHealthLocked(quiet bool, t *task, alive bool, cause string) {
	now := time.Now()
	h := t.health
	changed := h == nil || h.alive != alive
	if h == nil {
		h = &healthResult{}
		t.health = h
	}
	h.alive = alive
	if alive {
		h.failures = 0
		h.lastSuccess = now
		if h.firstSuccess.IsZero() {
			h.firstSuccess = now
		}
	} else {
		h.failures++
		h.lastFailure = now
		h.cause = cause
	}
	if changed {
		s.emitHealthLocked(quiet, t, alive)
	}
}

// trackingListener remembers the connections it accepted so that stopping a
// task can close them, as the end of a process does.
type trackingListener struct {
	net.Listener
	closeOnce sync.Once
	mu        sync.Mutex
	conns     map[*trackedConn]struct{}
}

func newTrackingListener(ln net.Listener) *trackingListener {
	return &trackingListener{Listener: ln, conns: make(map[*trackedConn]struct{})}
}

// Accept returns connections that keep *net.TCPConn's methods (CloseWrite,
// SetLinger, ReadFrom) through embedding.
func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{TCPConn: c.(*net.TCPConn), l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// Close closes the listening socket once; TaskFuncs may close it too.
func (l *trackingListener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.Listener.Close() })
	return err
}

func (l *trackingListener) closeConns(abrupt bool) {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		if abrupt {
			_ = c.SetLinger(0) // close sends RST
		}
		c.Close()
	}
}

type trackedConn struct {
	*net.TCPConn
	l *trackingListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.TCPConn.Close()
}
