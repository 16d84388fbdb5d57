package fsm

// registry is the kinds registry indexed once per Store, so the apply and
// query paths do not rebuild Kinds() on every call. It is never written after
// newRegistry returns.
type registry struct {
	kinds  []Kind
	byName map[string]*Kind
}

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
