// Package zktest runs a real Apache ZooKeeper server for tests.
//
// Start launches Debian's zookeeper package (3.8): java from PATH running
// org.apache.zookeeper.server.quorum.QuorumPeerMain with the classpath the
// package's own scripts use (/usr/share/zookeeper/bin/zkEnv.sh:
// /etc/zookeeper/conf and /usr/share/java/zookeeper.jar, whose manifest names
// its dependencies in /usr/share/java). The server is standalone, listens on a
// free loopback port, keeps its data in the test's temporary directory and has
// the admin HTTP server disabled. Start returns once the server answers
// "srvr" as serving; Stop kills it (as a crash would), Restart brings it back
// on the same port with the same data, so sessions and nodes survive as they
// do in production.
//
// Proxy sits between a client and the server and can cut the network
// (Cut/Heal), which is how tests make the server expire a session while it
// keeps running.
//
// If java or the jar is missing, Start fails the test and says to run
// `make test`, which installs the package: a ZooKeeper test never skips.
//
// Every process and goroutine started here is stopped by t.Cleanup; the
// server runs in its own process group, killed as a whole.
package zktest
