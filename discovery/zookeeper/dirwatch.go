package zookeeper

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/go-zookeeper/zk"
)

// dirWatch keeps exactly one watch armed on a node's children, or on its
// existence while the node is missing. Re-arming only after the watch fired
// keeps go-zookeeper from piling up one watcher per read.
type dirWatch struct {
	path string
	ch   <-chan zk.Event // the armed watch; nil when it must be armed again
}

// list returns the children of the node, nil if it does not exist, and
// leaves a watch armed that fires on the next change.
func (d *dirWatch) list(c *zk.Conn) ([]string, error) {
	if d.ch != nil {
		// Spent but not yet consumed (a change, or EventNotWatching after
		// the session expired): arm a new one below.
		select {
		case <-d.ch:
			d.ch = nil
		default:
		}
	}
	for {
		if d.ch != nil {
			// A watch is armed: any change from here on fires it, so a
			// plain read is enough.
			children, _, err := c.Children(d.path)
			if errors.Is(err, zk.ErrNoNode) {
				return nil, nil
			}
			return children, err
		}
		children, _, ch, err := c.ChildrenW(d.path)
		if err == nil {
			d.ch = ch
			return children, nil
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return nil, err
		}
		ok, _, ch, err := c.ExistsW(d.path)
		if err != nil {
			return nil, err
		}
		if !ok {
			d.ch = ch // fires when the node is created
			return nil, nil
		}
		// Created between the two calls. The exists watch now only fires on
		// a data change or deletion (a harmless extra read then); go round
		// again for a children watch.
	}
}

// fired marks the watch as spent after its channel delivered.
func (d *dirWatch) fired() { d.ch = nil }

// seqNode is a child of an election directory with its sequence number.
type seqNode struct {
	name string
	seq  int64
}

// latchSeq reads the sequence number of a Curator LeaderLatch node:
// "_c_<uuid>-latch-<seq>" (withProtection) or "latch-<seq>".
func latchSeq(name string) (int64, bool) {
	i := strings.LastIndex(name, "latch-")
	if i < 0 {
		return 0, false
	}
	return parseSeq(name[i+len("latch-"):])
}

// memberSeq reads the sequence number of a legacy twitter-commons group
// node, "member_<seq>". Marathon 1.3-1.4 tombstones ("member_-00000000",
// "member_-1<seq>") parse as well; they hold the leader too.
func memberSeq(name string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, "member_")
	if !ok {
		return 0, false
	}
	return parseSeq(rest)
}

// parseSeq reads ZooKeeper's sequence suffix: ten digits, or a signed number
// once the parent's int32 counter wrapped.
func parseSeq(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// bySeq keeps the children seq parses and orders them by sequence number,
// then name; never by name alone, because "_c_<uuid>" prefixes break
// lexical order (marathon-api.md §5.1).
func bySeq(children []string, seq func(string) (int64, bool)) []seqNode {
	out := make([]seqNode, 0, len(children))
	for _, c := range children {
		if n, ok := seq(c); ok {
			out = append(out, seqNode{c, n})
		}
	}
	slices.SortFunc(out, func(a, b seqNode) int {
		if a.seq != b.seq {
			if a.seq < b.seq {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}
