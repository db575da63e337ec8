package zktest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// Where Debian's zookeeper package puts things (zkEnv.sh: CLASSPATH=
// "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"; the jar's manifest
// Class-Path lists netty, jackson, slf4j... in /usr/share/java).
const (
	jarPath   = "/usr/share/java/zookeeper.jar"
	confDir   = "/etc/zookeeper/conf"
	mainClass = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

	// TickTime is the server's tick. Session timeouts are negotiated
	// between 2 and 600 ticks, so tests may use sessions as short as 200ms.
	TickTime = 100 * time.Millisecond

	startTimeout = 60 * time.Second // a cold JVM on two busy cores
	installHint  = "run `make test` (scripts/test-deps.sh installs Debian's zookeeper package and its Java runtime)"
)

// Server is one standalone ZooKeeper process. Its methods may be called from
// any goroutine.
type Server struct {
	t    testing.TB
	dir  string
	java string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
}

// Start runs a ZooKeeper server for the rest of the test. It fails the test
// (never skips) if java or the zookeeper jar is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("zktest: java not found in PATH: %s", installHint)
	}
	if _, err := os.Stat(jarPath); err != nil {
		t.Fatalf("zktest: %s missing: %s", jarPath, installHint)
	}
	s := &Server{t: t, dir: t.TempDir(), java: java}
	if err := os.Mkdir(filepath.Join(s.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	// Another process may take the free port between choosing and binding
	// it; try a few ports before giving up.
	for attempt := 0; ; attempt++ {
		s.port = testnet.FreePort(t)
		err := s.start()
		if err == nil {
			return s
		}
		if attempt == 2 {
			t.Fatalf("zktest: %v", err)
		}
	}
}

// Addr is the server's client address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Servers is Addr as the server list clients take.
func (s *Server) Servers() []string { return []string{s.Addr()} }

// Stop kills the server (SIGKILL to its process group, as a crash would) and
// waits for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd, s.done = nil, nil
}

// Restart stops the server if it runs and starts it again on the same port
// with the same data directory. It fails the test if the server does not
// come back.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("zktest: restart: %v", err)
	}
}

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	cfgPath := filepath.Join(s.dir, "zoo.cfg")
	cfg := fmt.Sprintf(`tickTime=%d
initLimit=10
syncLimit=5
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
maxSessionTimeout=60000
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,cons,dump,mntr
forceSync=no
`, TickTime.Milliseconds(), filepath.Join(s.dir, "data"), s.port)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logPath := filepath.Join(s.dir, "zookeeper.out")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.java,
		"-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.admin.enableServer=false",
		"-cp", confDir+":"+jarPath,
		mainClass, cfgPath)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so Stop kills the JVM and anything it forked;
	// Pdeathsig takes it down if the test binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.java, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(startTimeout)
	for {
		if serving(s.Addr()) {
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("zookeeper exited during start on port %d:\n%s", s.port, tail(logPath))
		case <-time.After(50 * time.Millisecond): // poll interval of a deadline-bound wait
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("zookeeper not serving on %s after %v:\n%s", s.Addr(), startTimeout, tail(logPath))
		}
	}
}

// serving asks the server's "srvr" four-letter word whether it serves
// clients; "ruok" answers imok before a server is ready for sessions.
func serving(addr string) bool {
	out, err := fourLetter(addr, "srvr", time.Second)
	return err == nil && strings.Contains(out, "Mode: standalone")
}

// fourLetter sends a four-letter-word command and returns the reply.
func fourLetter(addr, cmd string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, cmd); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

var sessionIDRe = regexp.MustCompile(`0x[0-9a-f]+`)

// Sessions returns the ids of the sessions the server tracks, from the
// "dump" four-letter word.
func (s *Server) Sessions() ([]int64, error) {
	out, err := fourLetter(s.Addr(), "dump", 2*time.Second)
	if err != nil {
		return nil, err
	}
	// "SessionTracker dump:\nSession Sets (n)/(m):\n<k> expire at ...:\n\t0x...\n
	// ephemeral nodes dump: ..." -- only the first part lists live sessions.
	if i := strings.Index(out, "ephemeral nodes dump"); i >= 0 {
		out = out[:i]
	}
	var ids []int64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := sessionIDRe.FindString(line); m != "" && m == line {
			v, err := strconv.ParseUint(m[2:], 16, 64)
			if err == nil {
				ids = append(ids, int64(v))
			}
		}
	}
	return ids, nil
}

// WaitSessionGone waits until the server no longer tracks session id (it
// expired or was closed), failing the test after timeout.
func (s *Server) WaitSessionGone(t testing.TB, id int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ids, err := s.Sessions()
		if err == nil && !contains(ids, id) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("zktest: session 0x%x still alive after %v (sessions %x, err %v)", id, timeout, ids, err)
		}
		time.Sleep(TickTime) // poll interval of a deadline-bound wait
	}
}

func contains(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Conn returns a client connected to the server, closed when the test ends.
// It is for arranging nodes; it logs nothing.
func (s *Server) Conn(t testing.TB) *zk.Conn {
	t.Helper()
	c, _, err := zk.Connect(s.Servers(), 10*time.Second, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// tail returns the last lines of the server's log, for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
