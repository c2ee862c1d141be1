package shadow

import (
	"fmt"
	"hash/maphash"
	"sort"
	"sync"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

// Bucket is the service database bucket the shadows live in, one key per shadow (ID.key).
const Bucket = "shadow"

// Shadows is the shadow store: the document operations over a durable Store, shared by the MQTT and
// HTTP front ends and the CLI. Operations on one shadow are serialised by a lock striped over the shadow
// keys (so that versions strictly increase and no update is lost), while different shadows go to the
// store concurrently and share its commits.
type Shadows struct {
	store  service.Store
	limits Limits
	now    func() time.Time

	seed  maphash.Seed
	locks [256]sync.Mutex

	// cache holds recently written shadows decoded, up to cacheBudget bytes of their stored form, so
	// that an update does not read and decode what the previous one wrote: the store read and the
	// decode were a twentieth of an update's CPU and the largest part of its garbage. A shadow's
	// entry changes only with its lock held and after its write is durable; entries are dropped at
	// random when the budget is full. Documents are never changed once built, so an entry is shared.
	cacheMu    sync.Mutex
	cache      map[string]cached
	cacheBytes int

	// changed, if set, hears of every accepted update and delete (the sync's trigger). It runs with
	// the shadow locked and must not block.
	changed func(ID)
}

// OnChange sets the function that hears of every accepted update and delete; set it before serving.
func (s *Shadows) OnChange(fn func(ID)) { s.changed = fn }

func (s *Shadows) notify(id ID) {
	if s.changed != nil {
		s.changed(id)
	}
}

// cacheBudget bounds the cache by the stored size of its documents (decoded, a document takes a few
// times that): a megabyte is some thousands of typical device shadows.
const cacheBudget = 1 << 20

type cached struct {
	d    *Document
	size int
}

// cached returns the cached document of key, if there is one.
func (s *Shadows) cached(key string) (*Document, bool) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	c, ok := s.cache[key]
	return c.d, ok
}

// remember caches d (whose stored form is size bytes) as key's document, nil forgets key. Call it
// with the shadow locked, after d is durable (or, for nil, after a write that may have failed).
func (s *Shadows) remember(key string, d *Document, size int) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if c, ok := s.cache[key]; ok {
		s.cacheBytes -= c.size
		delete(s.cache, key)
	}
	if d == nil || size > cacheBudget/16 {
		return
	}
	for k, c := range s.cache {
		if s.cacheBytes+size <= cacheBudget {
			break
		}
		s.cacheBytes -= c.size
		delete(s.cache, k) // map order: a random victim
	}
	if s.cache == nil {
		s.cache = map[string]cached{}
	}
	s.cache[key] = cached{d: d, size: size}
	s.cacheBytes += size
}

// NewShadows serves the shadows in store. now is the clock (time.Now when nil).
func NewShadows(store service.Store, limits Limits, now func() time.Time) *Shadows {
	if now == nil {
		now = time.Now
	}
	return &Shadows{store: store, limits: limits, now: now, seed: maphash.MakeSeed()}
}

func (s *Shadows) lock(id ID) func() {
	m := &s.locks[maphash.String(s.seed, id.key())%uint64(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// Now is the service's clock in epoch seconds, the unit of every shadow timestamp.
func (s *Shadows) Now() int64 { return s.now().Unix() }

// load reads a stored document, nil when there is none: from the cache, else from the store.
func (s *Shadows) load(id ID) (*Document, error) {
	d, _, err := s.read(id)
	return d, err
}

// loadLocked is load for a caller that holds the shadow's lock: a document read from the store is
// cached.
func (s *Shadows) loadLocked(id ID) (*Document, error) {
	d, size, err := s.read(id)
	if size > 0 {
		s.remember(id.key(), d, size)
	}
	return d, err
}

// read is load, with the stored size of a document it read from the store (0 from the cache).
func (s *Shadows) read(id ID) (*Document, int, error) {
	key := id.key()
	if d, ok := s.cached(key); ok {
		return d, 0, nil
	}
	raw, err := s.store.Get(key)
	if err != nil || raw == nil {
		return nil, 0, err
	}
	d, err := decodeDocument(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("shadow %s: stored document: %w", key, err)
	}
	return d, len(raw), nil
}

// put stores d as id's document and caches it once it is durable; a failed write forgets id's
// cached document, so that the next read goes to the store.
func (s *Shadows) put(id ID, d *Document) error {
	key, raw := id.key(), d.encode()
	if err := s.store.Put(key, raw); err != nil {
		s.remember(key, nil, 0)
		return err
	}
	s.remember(key, d, len(raw))
	return nil
}

// storeFailure is the answer to a store failure: 500, with the cause for the front end's log record
// (a failed write is never acknowledged).
func storeFailure(err error) (*Error, error) { return errInternal, err }

// Get returns the live shadow, or 404.
func (s *Shadows) Get(id ID) (*Document, *Error, error) {
	d, err := s.load(id)
	if err != nil {
		e, cause := storeFailure(err)
		return nil, e, cause
	}
	if !d.Exists() {
		return nil, errNoShadow(id), nil
	}
	return d, nil, nil
}

// Update applies req to the shadow and stores the result durably before it returns. publish, if not
// nil, runs with the shadow still locked, after the store, so that answers about one shadow go out in
// version order.
func (s *Shadows) Update(id ID, req *UpdateRequest, publish func(*Update)) (*Update, *Error, error) {
	defer s.lock(id)()
	old, err := s.loadLocked(id)
	if err != nil {
		e, cause := storeFailure(err)
		return nil, e, cause
	}
	u, e := Apply(old, req, s.Now(), s.limits)
	if e != nil {
		return nil, e, nil
	}
	if err := s.put(id, u.Current); err != nil {
		e, cause := storeFailure(err)
		return nil, e, cause
	}
	if publish != nil {
		publish(u)
	}
	s.notify(id)
	return u, nil, nil
}

// Delete deletes the shadow, keeping its version as a tombstone (a shadow created again carries on
// from it), and returns the version it had; 404 when there is no shadow. publish, if not nil, runs
// with the shadow still locked, after the store, as in Update.
func (s *Shadows) Delete(id ID, publish func(version int64)) (int64, *Error, error) {
	return s.deleteIf(id, -1, publish)
}

// deleteIf is Delete of the shadow only if it has version (any version when it is -1): 409 otherwise.
func (s *Shadows) deleteIf(id ID, version int64, publish func(version int64)) (int64, *Error, error) {
	defer s.lock(id)()
	d, err := s.loadLocked(id)
	if err != nil {
		e, cause := storeFailure(err)
		return 0, e, cause
	}
	if !d.Exists() {
		return 0, errNoShadow(id), nil
	}
	if version >= 0 && d.Version != version {
		return 0, errVersionConflict, nil
	}
	tomb := &Document{Version: d.Version, Deleted: s.Now()}
	if err := s.put(id, tomb); err != nil {
		e, cause := storeFailure(err)
		return 0, e, cause
	}
	if publish != nil {
		publish(d.Version)
	}
	s.notify(id)
	return d.Version, nil, nil
}

// ListNamed lists a thing's live named shadows in name order, at most limit of them after the name
// after ("" from the start); next is the last name returned when there may be more.
func (s *Shadows) ListNamed(thing, after string, limit int) (names []string, next string, err error) {
	err = s.store.ForEach(thing+"/", func(key string, value []byte) error {
		id := idFromKey(key)
		if id.Thing != thing || id.Name == "" || id.Name <= after {
			return nil
		}
		d, err := decodeDocument(value)
		if err != nil || !d.Exists() {
			return nil
		}
		names = append(names, id.Name)
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list shadows of %s: %w", thing, err)
	}
	sort.Strings(names)
	if limit > 0 && len(names) > limit {
		names = names[:limit]
		next = names[limit-1]
	}
	return names, next, nil
}
