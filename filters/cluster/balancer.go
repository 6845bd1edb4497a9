package cluster

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Set is an immutable group of endpoints with the cluster's balancer.
// Picks prefer healthy endpoints; when none is healthy they fall back to
// any endpoint (Envoy's "panic mode"), so a cluster that is wholly ejected
// still gets probed instead of refusing every request.
type Set struct {
	endpoints []*Endpoint
	policy    breezev1.Cluster_LbPolicy
	// HashKey is the request metadata key RING_HASH and MAGLEV hash when
	// the route names none: the subset's, else the cluster's.
	HashKey string
	// breaker and detector are the limits and outlier detection of the
	// requests balanced on the set: the subset's own, else the cluster's.
	breaker  *Breaker
	detector *detector
	now      func() time.Time
	next     atomic.Uint64
	// Each policy builds only its own structures: ring or maglev for the
	// hashing policies, schedule (round robin) and cumulative (random)
	// for the others.
	schedule   []int32
	cumulative []uint64
	ring       []ringEntry
	maglev     []int32
}

type ringEntry struct {
	hash uint64
	idx  int32
}

// Len is the number of endpoints.
func (s *Set) Len() int { return len(s.endpoints) }

// Endpoints lists the set's endpoints.
func (s *Set) Endpoints() []*Endpoint { return s.endpoints }

// Breaker is the circuit breaker of the requests balanced on the set: the
// subset's when the cluster gives the subset circuit breakers of its own,
// else the cluster's.
func (s *Set) Breaker() *Breaker { return s.breaker }

func (c *Cluster) newSet(sp subsetPolicy, eps []*Endpoint) *Set {
	s := &Set{endpoints: eps, policy: sp.policy, HashKey: sp.hashKey, breaker: sp.breaker, detector: sp.detector, now: c.now}
	if len(eps) == 0 {
		return s
	}
	switch s.policy {
	case breezev1.Cluster_RING_HASH:
		s.buildRing()
	case breezev1.Cluster_MAGLEV:
		s.buildMaglev()
	default:
		s.buildWeights()
	}
	return s
}

func (s *Set) buildWeights() {
	g := uint32(0)
	for _, e := range s.endpoints {
		g = gcd(g, e.Weight)
	}
	var total uint64
	for i, e := range s.endpoints {
		w := e.Weight / g
		// Bound the schedule: beyond 64 slots per endpoint the
		// proportions are already within 2%.
		w = min(w, 64)
		for range w {
			s.schedule = append(s.schedule, int32(i))
		}
		total += uint64(e.Weight)
		s.cumulative = append(s.cumulative, total)
	}
	// Interleave so that a weighted schedule does not send bursts to one endpoint.
	rand.New(rand.NewPCG(uint64(len(s.schedule)), 7)).Shuffle(len(s.schedule), func(i, j int) {
		s.schedule[i], s.schedule[j] = s.schedule[j], s.schedule[i]
	})
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

const ringPerWeight = 128

func (s *Set) buildRing() {
	var buf []byte
	for i, e := range s.endpoints {
		n := int(min(e.Weight, 64)) * ringPerWeight
		for r := range n {
			buf = append(buf[:0], e.Addr...)
			buf = append(buf, '_')
			buf = appendInt(buf, r)
			s.ring = append(s.ring, ringEntry{hash: xxhash.Sum64(buf), idx: int32(i)})
		}
	}
	slices.SortFunc(s.ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
}

func appendInt(b []byte, v int) []byte {
	if v >= 10 {
		b = appendInt(b, v/10)
	}
	return append(b, byte('0'+v%10))
}

// maglevSize is prime and much larger than any endpoint count we expect,
// which keeps Maglev's disruption on endpoint changes small.
const maglevSize = 65537

func (s *Set) buildMaglev() {
	n := len(s.endpoints)
	offsets := make([]uint64, n)
	skips := make([]uint64, n)
	nexts := make([]uint64, n)
	for i, e := range s.endpoints {
		offsets[i] = xxhash.Sum64String(e.Addr) % maglevSize
		skips[i] = xxhash.Sum64String(e.Addr+"#skip")%(maglevSize-1) + 1
	}
	table := make([]int32, maglevSize)
	for i := range table {
		table[i] = -1
	}
	// Weighted Maglev: each round, an endpoint claims slots in proportion to its weight.
	filled := 0
	for filled < maglevSize {
		for i, e := range s.endpoints {
			for range min(e.Weight, 64) {
				for {
					c := (offsets[i] + nexts[i]*skips[i]) % maglevSize
					nexts[i]++
					if table[c] < 0 {
						table[c] = int32(i)
						filled++
						break
					}
				}
				if filled == maglevSize {
					break
				}
			}
			if filled == maglevSize {
				break
			}
		}
	}
	s.maglev = table
}

// Pick chooses an endpoint; hashValue is the request's hash-key value for
// consistent hashing (hasHash false when the request has none, then any
// endpoint will do). It returns nil only for an empty set.
func (s *Set) Pick(hashValue string, hasHash bool) *Endpoint {
	n := len(s.endpoints)
	if n == 0 {
		return nil
	}
	now := s.now().UnixNano()
	switch s.policy {
	case breezev1.Cluster_RING_HASH, breezev1.Cluster_MAGLEV:
		// A request without the key hashes a random value, as Envoy does:
		// spread by the ring's (or table's) weights, ejected endpoints
		// skipped. A hash set has no cumulative weights for pickRandom.
		h := rand.Uint64()
		if hasHash {
			h = xxhash.Sum64String(hashValue)
		}
		return s.pickHash(h, now)
	case breezev1.Cluster_RANDOM:
		return s.pickRandom(now)
	case breezev1.Cluster_LEAST_REQUEST:
		return s.pickLeast(now)
	default:
		return s.pickRoundRobin(now)
	}
}

func (s *Set) pickRoundRobin(now int64) *Endpoint {
	sched := s.schedule
	n := uint64(len(sched))
	// Each pick takes turns of the schedule until one is healthy: an
	// ejected endpoint's turns are used up, so its share spreads over the
	// others by weight instead of all falling to the endpoint after it.
	var slot uint64
	for range n {
		slot = s.next.Add(1)
		if e := s.endpoints[sched[slot%n]]; e.Healthy(now) {
			return e
		}
	}
	// Concurrent picks took the healthy turns meanwhile, or none is healthy.
	for i := range n {
		if e := s.endpoints[sched[(slot+i)%n]]; e.Healthy(now) {
			return e
		}
	}
	// All ejected: any one, so that each gets probed.
	return s.endpoints[sched[rand.Uint64N(n)]]
}

func (s *Set) pickRandom(now int64) *Endpoint {
	total := s.cumulative[len(s.cumulative)-1]
	var first *Endpoint
	// A few draws find a healthy endpoint with high probability without
	// scanning; then fall back to a scan.
	for range 3 {
		r := rand.Uint64N(total)
		i, _ := slices.BinarySearch(s.cumulative, r+1)
		e := s.endpoints[i]
		if e.Healthy(now) {
			return e
		}
		if first == nil {
			first = e
		}
	}
	if e := s.randomHealthy(now, true); e != nil {
		return e
	}
	return first
}

// randomHealthy draws among the healthy endpoints only, by weight or
// uniformly, for when random draws keep hitting ejected ones. (A scan from
// a random start would favour the endpoint after a run of ejected ones.)
// Nil when none is healthy.
func (s *Set) randomHealthy(now int64, weighted bool) *Endpoint {
	weight := func(e *Endpoint) uint64 {
		if weighted {
			return uint64(e.Weight)
		}
		return 1
	}
	var total uint64
	for _, e := range s.endpoints {
		if e.Healthy(now) {
			total += weight(e)
		}
	}
	if total == 0 {
		return nil
	}
	r := rand.Uint64N(total)
	for _, e := range s.endpoints {
		if !e.Healthy(now) {
			continue
		}
		if w := weight(e); r >= w {
			r -= w
			continue
		}
		return e
	}
	return nil // ejected between the two passes
}

// pickLeast is power of two choices: two random endpoints, the one with
// fewer requests in flight wins.
func (s *Set) pickLeast(now int64) *Endpoint {
	n := len(s.endpoints)
	if n == 1 {
		return s.endpoints[0]
	}
	a := s.endpoints[rand.IntN(n)]
	b := s.endpoints[rand.IntN(n)]
	ah, bh := a.Healthy(now), b.Healthy(now)
	switch {
	case ah && bh:
		if b.Inflight() < a.Inflight() {
			return b
		}
		return a
	case ah:
		return a
	case bh:
		return b
	}
	if e := s.randomHealthy(now, false); e != nil {
		return e
	}
	return a
}

func (s *Set) pickHash(h uint64, now int64) *Endpoint {
	if s.maglev != nil {
		// Probe the following slots when the owner is ejected: they belong to
		// other endpoints in Maglev's permutation order.
		for i := range uint64(16) {
			if e := s.endpoints[s.maglev[(h+i)%maglevSize]]; e.Healthy(now) {
				return e
			}
		}
		return s.endpoints[s.maglev[h%maglevSize]]
	}
	ring := s.ring
	i, _ := slices.BinarySearchFunc(ring, h, func(e ringEntry, h uint64) int {
		switch {
		case e.hash < h:
			return -1
		case e.hash > h:
			return 1
		}
		return 0
	})
	// Walk clockwise to the first healthy endpoint, so that only the keys of
	// an ejected endpoint move.
	for j := range len(ring) {
		e := s.endpoints[ring[(i+j)%len(ring)].idx]
		if e.Healthy(now) {
			return e
		}
	}
	return s.endpoints[ring[i%len(ring)].idx]
}
