package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// PortListener is one service port's listener as a data plane keeps it; a
// PortSet decides when it opens and closes. Its methods run with the plane's
// listener lock held.
type PortListener interface {
	// Listen binds the port, or serves adopt, the port's socket the other
	// plane let go (see Handoff), when it is not nil; it starts serving it
	// and returns the bound address.
	Listen(adopt *net.TCPListener) (net.Addr, error)
	// Socket returns the listening socket while the port is bound.
	Socket() *net.TCPListener
	// Listening reports whether the port is bound now.
	Listening() bool
	// StopListening closes the listener. What happens to the connections
	// open on it is the plane's business (drained, in both planes).
	StopListening()
	// Status reports the port and its counters; PortSet fills in Error.
	Status() PortStatus
	// Busy reports whether connections are still open on the port.
	Busy() bool
}

// PortSet is the listener bookkeeping both data planes share: which service
// ports are bound, the bindable range (a port outside it is logged once,
// and again only if it leaves and comes back), and each port's last bind
// failure, kept for Status and logged once per distinct error; the next
// Sync retries. It keeps an entry for every port it ever bound, so counters
// survive a service leaving and coming back; the range bounds them.
//
// A PortSet is not safe for concurrent use: the plane calls it with its
// listener lock held.
type PortSet[P PortListener] struct {
	min, max   int
	log        *zap.Logger
	newPort    func(port int) P
	ports      map[int]P
	bindErr    map[int]string
	outOfRange map[int]bool
	own        OwnListeners
	handoff    *Handoff
	// unsaid marks the ports in bindErr whose failure was not logged yet:
	// a first "address in use" while a Handoff is set (see Sync).
	unsaid map[int]bool
}

// OwnListeners names the process's own listeners by port, such as
// {8053: "DNS listener (--dns :8053)"}. The defaults put --dns :8053 inside
// --ports 8000-8100: an app given service port 8053 then fails to bind, and
// "address already in use" alone sends the operator looking for another
// process. Whether they collide depends on the bind addresses (a DNS
// listener on 127.0.0.1 and service ports on another address coexist), so
// nothing is said until a bind actually fails.
type OwnListeners map[int]string

// Explain adds to a bind failure of port that one of pacer's own listeners
// is on that port, when it is, and the failure is "address already in use".
func (o OwnListeners) Explain(port int, err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	if note, ok := o.note(port); ok {
		return fmt.Errorf("%w: %s", err, note)
	}
	return err
}

func (o OwnListeners) note(port int) (string, bool) {
	name, ok := o[port]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("this pacer's own %s holds port %d; give the app a service port it does not use, or move that listener out of --ports", name, port), true
}

// BindCapabilityHint says what binding a port below 1024 takes, for a bind
// refused with EACCES: "permission denied" alone reads as a file's
// permissions, or, beside "is another pacer running?", sends an operator
// looking for a process that was never there.
const BindCapabilityHint = "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit, as deploy/pacer.service does, or setcap cap_net_bind_service=+ep on lb)"

// explainDenied adds to a bind refused for lack of privilege what it takes.
func explainDenied(err error) error {
	if !errors.Is(err, syscall.EACCES) {
		return err
	}
	return fmt.Errorf("%w: %s; or give the app a service port above 1023", err, BindCapabilityHint)
}

// SetOwnListeners tells s which ports the process's other listeners hold,
// for its bind failures (see OwnListeners).
func (s *PortSet[P]) SetOwnListeners(own OwnListeners) { s.own = own }

// SetHandoff has s pass the sockets of ports the other plane takes over
// through h, and adopt those it parked (see Handoff).
func (s *PortSet[P]) SetHandoff(h *Handoff) { s.handoff = h }

// NewPortSet returns an empty set for ports min to max; newPort makes a
// port's entry the first time it is claimed.
func NewPortSet[P PortListener](min, max int, log *zap.Logger, newPort func(port int) P) *PortSet[P] {
	return &PortSet[P]{
		min: min, max: max, log: log, newPort: newPort,
		ports: map[int]P{}, bindErr: map[int]string{}, outOfRange: map[int]bool{}, unsaid: map[int]bool{},
	}
}

// Opened is a listener Sync opened, for the plane's OnListening hook, which
// runs after the lock is released so that it may call the plane.
type Opened struct {
	Port int
	Addr net.Addr
}

// Sync binds every claimed port in range that is not bound, and stops the
// listeners of the ports no longer claimed; elsewhere are those the other
// plane claims now, whose sockets go to it through the Handoff. It returns
// the listeners it opened.
func (s *PortSet[P]) Sync(claimed, elsewhere map[int]bool) []Opened {
	var opened []Opened
	// Let go first: the other plane may be waiting for one of these.
	for port, ps := range s.ports {
		if claimed[port] {
			continue
		}
		if ps.Listening() {
			if s.handoff != nil && elsewhere[port] {
				if err := s.handoff.Park(port, ps.Socket()); err != nil {
					s.log.Warn("cannot hand the listener to the other plane; closing it", zap.Int(keyPort, port), zap.Error(err))
				}
			}
			ps.StopListening()
		}
		delete(s.bindErr, port) // nobody wants the port now
		delete(s.unsaid, port)
	}
	for port := range claimed {
		if !s.InRange(port) {
			if !s.outOfRange[port] {
				s.outOfRange[port] = true
				s.log.Info("service port outside the bindable range; not bound", zap.Int(keyPort, port),
					zap.Int("port_min", s.min), zap.Int("port_max", s.max))
			}
			continue
		}
		ps, ok := s.ports[port]
		if !ok {
			ps = s.newPort(port)
			s.ports[port] = ps
		}
		if ps.Listening() {
			continue
		}
		adopt, err := s.handoff.Adopt(port)
		if err != nil {
			s.log.Warn("cannot take the listener the other plane let go; binding anew", zap.Int(keyPort, port), zap.Error(err))
		}
		addr, err := ps.Listen(adopt)
		if err != nil {
			if adopt != nil {
				adopt.Close()
			}
			err = explainDenied(s.own.Explain(port, err))
			msg := err.Error()
			if s.handoff != nil && errors.Is(err, syscall.EADDRINUSE) && s.bindErr[port] == "" {
				// Most likely the other plane, which has not let the port
				// go yet: it parks the socket for us, which wakes our Run.
				// Said if it is still so at the retry.
				s.bindErr[port], s.unsaid[port] = msg, true
				continue
			}
			if msg != s.bindErr[port] || s.unsaid[port] {
				s.bindErr[port] = msg
				delete(s.unsaid, port)
				// A warning: the port's service is not served here until it
				// binds. Often another process holds the port (marathon-lb
				// during a migration); for a moment after a mode change it
				// may be this pacer's other plane.
				s.log.Warn("cannot bind service port; retrying", zap.Int(keyPort, port), zap.Duration("every", BindRetry), zap.Error(err))
			}
			continue
		}
		delete(s.bindErr, port)
		delete(s.unsaid, port)
		opened = append(opened, Opened{port, addr})
	}
	for port := range s.outOfRange {
		if !claimed[port] {
			delete(s.outOfRange, port) // log again if it comes back
		}
	}
	return opened
}

// BindRetry is how often a plane tries again to bind the claimed ports
// that failed to bind (Failing): nothing else would, in a table that stops
// changing. A port is often taken only for a moment: the other data plane
// lets it go when a service changes mode, on its own goroutine.
const BindRetry = time.Second

// Failing reports whether a claimed port failed to bind and waits for a
// retry.
func (s *PortSet[P]) Failing() bool { return len(s.bindErr) > 0 }

// InRange reports whether port may be bound.
func (s *PortSet[P]) InRange(port int) bool { return port >= s.min && port <= s.max }

// Get returns port's entry, if the port was ever claimed in range.
func (s *PortSet[P]) Get(port int) (P, bool) {
	ps, ok := s.ports[port]
	return ps, ok
}

// All yields the entry of every port ever claimed in range.
func (s *PortSet[P]) All() iter.Seq[P] { return maps.Values(s.ports) }

// Status reports the ports claimed now, in range or not, and those still
// listening or holding connections, sorted by port.
func (s *PortSet[P]) Status(claimed []int) []PortStatus {
	out := make([]PortStatus, 0, len(claimed))
	seen := make(map[int]bool, len(claimed))
	for _, port := range claimed {
		seen[port] = true
		if !s.InRange(port) {
			out = append(out, PortStatus{Port: port, Error: fmt.Sprintf("outside --ports %d-%d; not bound", s.min, s.max)})
			continue
		}
		st := PortStatus{Port: port}
		if ps, ok := s.ports[port]; ok {
			st = ps.Status()
		}
		st.Error = s.bindErr[port]
		st.BindFailing = st.Error != ""
		out = append(out, st)
	}
	for port, ps := range s.ports {
		if !seen[port] && (ps.Listening() || ps.Busy()) {
			out = append(out, ps.Status())
		}
	}
	slices.SortFunc(out, func(a, b PortStatus) int { return cmp.Compare(a.Port, b.Port) })
	return out
}
