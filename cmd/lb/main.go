// Command lb is pacer: a service-discovery load balancer for Mesos + Marathon.
//
// It follows Marathon's event stream, keeps a routing table of every app's
// live, healthy tasks, and serves them on stable service ports (TCP proxy),
// in DNS (mesos-dns names) and on an admin listener. `lb demo` runs it against
// a built-in Marathon simulator. See README.md and `lb --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pacer-lb/pacer/internal/gcfloor"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	// SIGHUP asks a running pacer to resync (run relays it from then on);
	// before that, during start-up, it must not end the process, as its
	// default action would.
	signal.Ignore(syscall.SIGHUP)
	cmd := "run"
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-version":
			fmt.Println("lb (pacer)", version)
			return 0
		case "demo":
			cmd, args = "demo", args[1:]
		}
	}
	cfg, err := parseConfig("lb", args, os.LookupEnv, os.Stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb:", err)
		return 2
	}
	log, err := newLogger(cfg.logLevel, cfg.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	// At tens of thousands of new connections a second and a live heap of
	// a few MB, GOGC=100 alone collects every few tens of milliseconds (see
	// package gcfloor). GOGC in the environment turns the floor off.
	defer gcfloor.Start(gcfloor.DefaultFloor).Stop()

	ctx, hurry, release := stopSignals()
	defer release()
	if cmd == "demo" {
		err = runDemo(ctx, hurry, cfg, log)
	} else {
		err = run(ctx, hurry, cfg, log, nil)
	}
	if err != nil {
		log.Error("stopped", zap.Error(err))
		fmt.Fprintln(os.Stderr, "lb:", err)
		return 1
	}
	return 0
}

// stopSignals turns SIGTERM and SIGINT into a graceful stop. The first
// cancels stop: pacer fails /healthz, withdraws itself, waits out
// --shutdown-delay and drains. The second closes hurry: the delay and the
// drain end now, as an operator pressing ^C again expects. A third gets the
// signal's default action and ends the process at once.
func stopSignals() (stop context.Context, hurry <-chan struct{}, release func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	ctx, cancel := context.WithCancel(context.Background())
	now := make(chan struct{})
	released := make(chan struct{})
	go func() {
		for _, next := range []func(){cancel, func() { close(now); signal.Reset(syscall.SIGTERM, os.Interrupt) }} {
			select {
			case <-sigs:
				next()
			case <-released:
				return
			}
		}
	}()
	return ctx, now, func() {
		signal.Stop(sigs)
		close(released)
		cancel()
	}
}

// newLogger builds the zap logger: console on a terminal, JSON otherwise.
func newLogger(level, format string) (*zap.Logger, error) {
	if format == "" {
		format = "json"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "console"
		}
	}
	var zc zap.Config
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	// Errors carry their context in their wrapping; a stack trace of the
	// logging call adds a dozen lines and nothing an operator can act on.
	zc.DisableStacktrace = true
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	return zc.Build()
}
