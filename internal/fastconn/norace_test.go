//go:build !race

package fastconn

const raceEnabled = false
