//go:build race

package fastconn

// raceEnabled: the race detector makes sync.Pool drop a quarter of what is
// put back, on purpose, so allocation counts that rely on a pool are only
// meaningful without it. make test runs those tests a second time without -race.
const raceEnabled = true
