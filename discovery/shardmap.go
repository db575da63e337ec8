package discovery

import (
	"hash/maphash"
	"maps"
)

// numShards splits each snapshot index so that a writer copies only the
// shards it touches: an update costs O(numShards + n/numShards) rather than
// O(n), which keeps a single event's cost flat from ten apps to ten thousand.
const numShards = 256

// shardSeed is fixed for the life of the process; it is never written after
// initialisation.
var shardSeed = maphash.MakeSeed()

func shardOf[K comparable](k K) uint8 { return uint8(maphash.Comparable(shardSeed, k)) }

// shardedMap is a persistent map: published values are never modified, and
// an editor shares every shard it does not write.
type shardedMap[K comparable, V any] struct {
	shards *[numShards]map[K]V
	n      int
}

func newShardedMap[K comparable, V any]() shardedMap[K, V] {
	return shardedMap[K, V]{shards: new([numShards]map[K]V)}
}

func (m shardedMap[K, V]) get(k K) V { return m.shards[shardOf(k)][k] }

func (m shardedMap[K, V]) len() int { return m.n }

// each calls f for every entry, in no particular order.
func (m shardedMap[K, V]) each(f func(K, V)) {
	for _, sh := range m.shards {
		for k, v := range sh {
			f(k, v)
		}
	}
}

// edit starts a copy-on-write edit of m; m itself is never changed.
func (m shardedMap[K, V]) edit() *mapEditor[K, V] {
	shards := *m.shards
	return &mapEditor[K, V]{shards: &shards, n: m.n}
}

// mapEditor builds the next shardedMap, cloning a shard on its first write.
type mapEditor[K comparable, V any] struct {
	shards *[numShards]map[K]V
	owned  [numShards]bool
	n      int
}

func (e *mapEditor[K, V]) shard(k K) map[K]V {
	i := shardOf(k)
	if !e.owned[i] {
		if e.shards[i] == nil {
			e.shards[i] = make(map[K]V)
		} else {
			e.shards[i] = maps.Clone(e.shards[i])
		}
		e.owned[i] = true
	}
	return e.shards[i]
}

func (e *mapEditor[K, V]) get(k K) V { return e.shards[shardOf(k)][k] }

func (e *mapEditor[K, V]) set(k K, v V) {
	sh := e.shard(k)
	if _, ok := sh[k]; !ok {
		e.n++
	}
	sh[k] = v
}

func (e *mapEditor[K, V]) del(k K) {
	if _, ok := e.shards[shardOf(k)][k]; !ok {
		return
	}
	delete(e.shard(k), k)
	e.n--
}

func (e *mapEditor[K, V]) done() shardedMap[K, V] { return shardedMap[K, V]{shards: e.shards, n: e.n} }
