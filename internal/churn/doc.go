// Package churn is the churn test shared by bench/churn (30 s runs, lb as its
// own process) and cmd/lb's churn_test.go (short runs inside `make test`):
// continuous load through pacer on one service of the Marathon simulator
// while its tasks are killed and replaced, counting every failed request.
//
// Load runs the clients; Killer kills tasks. Both stop when their context
// ends. The clients are deliberately strict: one raw keep-alive connection
// per worker, no client-side retry of any kind, so every failure pacer lets
// through is counted.
package churn
