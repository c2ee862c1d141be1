package mqtt

import (
	"strings"
	"sync"
	"sync/atomic"
)

// ggbroker patch: a cache of the subscribers of a topic, so that a publish finds them without
// allocating. Upstream built a fresh Subscribers value (four maps, and a copy of every matching
// particle's subscription map) for every PUBLISH: 12 of the 17 allocations per delivered QoS 0
// message, and 18 % of the broker's CPU under fan-in (BENCHMARKS.md).
//
// Every change to the index (Subscribe, Unsubscribe and their inline forms) moves a generation
// counter after it is made; an entry is used only if it was computed in the current generation. A
// scan that overlaps a change is stored under the generation read before the scan, so it is never
// used after that change. Only values without shared subscriptions are cached: those are read-only
// for publishToSubscribers, while shared ones are selected per message and so changed.
type subscriberCache struct {
	gen     atomic.Uint64
	entries sync.Map // topic string -> cachedSubscribers
	size    atomic.Int64
}

type cachedSubscribers struct {
	gen  uint64
	subs *Subscribers
}

// subscriberCacheMax bounds the topics held; past it, one entry is evicted per new one.
const subscriberCacheMax = 4096

func (c *subscriberCache) invalidate() { c.gen.Add(1) }

// subscribersCached returns the subscribers of topic, computed by x.Subscribers or cached. The
// second result says whether the value is shared with other callers, and must then not be changed.
func (x *TopicsIndex) subscribersCached(topic string) (subs *Subscribers, shared bool) {
	gen := x.cache.gen.Load()
	if v, ok := x.cache.entries.Load(topic); ok {
		if e := v.(cachedSubscribers); e.gen == gen {
			return e.subs, true
		}
	}
	subs = x.Subscribers(topic)
	if len(subs.Shared) > 0 {
		return subs, false
	}
	if _, loaded := x.cache.entries.Swap(topic, cachedSubscribers{gen: gen, subs: subs}); !loaded {
		if x.cache.size.Add(1) > subscriberCacheMax {
			x.cache.entries.Range(func(k, _ any) bool {
				if k.(string) == topic {
					return true
				}
				if _, deleted := x.cache.entries.LoadAndDelete(k); deleted {
					x.cache.size.Add(-1)
				}
				return false
			})
		}
	}
	return subs, true
}

// HasSubscribers reports whether any subscription (a client's, shared or inline) matches topic, from
// the cache (ggbroker patch: a service that publishes only when someone listens asks it per message).
//
// A topic whose first level has no particle at the root, while the root has no + or # particle
// either, can match no subscription: that is answered without the cache (patch 53), so that topics
// asked about once each (ggbroker's lifecycle events, one topic per client ID) do not fill it and
// deepen every lookup of the topics that messages are published to.
func (x *TopicsIndex) HasSubscribers(topic string) bool {
	if first, _, _ := strings.Cut(topic, "/"); x.root.particles.get(first) == nil &&
		x.root.particles.get("+") == nil && x.root.particles.get("#") == nil {
		return false
	}
	subs, _ := x.subscribersCached(topic)
	return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
}
