package fsm

import "sync"

// registry is the kinds registry indexed once, so the apply, query and
// validation paths do not rebuild Kinds() on every call. It is never written after
// newRegistry returns.
type registry struct {
	kinds  []Kind
	byName map[string]*Kind
}

// builtin is the registry the exported validators and lookups share. It is
// built on first use and never written after, so sharing it is safe; rebuilding
// Kinds() per call was 2.4% of a leader's CPU under write load (every
// RecordDecision validated its kind) and a thousand rebuilds per 1,000-number
// consent check.
var builtin = sync.OnceValue(newRegistry)

func newRegistry() *registry {
	r := &registry{kinds: Kinds(), byName: make(map[string]*Kind)}
	for i := range r.kinds {
		r.byName[r.kinds[i].Name] = &r.kinds[i]
	}
	return r
}

func (r *registry) lookup(name string) (*Kind, bool) {
	k, ok := r.byName[name]
	return k, ok
}
