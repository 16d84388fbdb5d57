package fsm

// Kind is one consent kind of the registry: its states, with the default
// state (what a patient with no recorded decision has) first.
type Kind struct {
	Name         string
	Description  string
	DefaultState string
	States       []State
}

// State is one state a kind can be in, with the codes GP systems record it as.
type State struct {
	Name        string
	Description string
	Codes       []Code
}

// Code is an external clinical code, e.g. System "read_v2", Code "9Ndo".
type Code struct {
	System string
	Code   string
}

// HasState reports whether name is one of the kind's states.
func (k Kind) HasState(name string) bool {
	for _, s := range k.States {
		if s.Name == name {
			return true
		}
	}
	return false
}

func readV2(code string) []Code { return []Code{{System: "read_v2", Code: code}} }

// Kinds returns the registry, in a fixed order. Consent kinds are data: a new
// kind is a new entry here, not new code paths. The National Data Opt-out is
// deliberately absent: its licence forbids copying it into records.
//
// It returns a fresh copy each call so no caller can change the registry.
func Kinds() []Kind {
	return []Kind{
		{
			Name:         "scr",
			Description:  "Summary Care Record upload",
			DefaultState: "implied_core",
			States: []State{
				{Name: "implied_core", Description: "Implied consent for core SCR upload", Codes: readV2("9Ndl")},
				{Name: "consent_core", Description: "Express consent for core SCR upload", Codes: readV2("9Ndm")},
				{Name: "consent_core_additional", Description: "Express consent for core and additional SCR upload", Codes: readV2("9Ndn")},
				{Name: "dissent", Description: "Express dissent from SCR upload", Codes: readV2("9Ndo")},
			},
		},
		{
			Name:         "gp_secondary_use",
			Description:  "Type 1 objection to secondary use of GP-held identifiable data",
			DefaultState: "no_objection",
			States: []State{
				{Name: "no_objection", Description: "No objection recorded"},
				{Name: "dissent", Description: "Dissent from secondary use of GP patient identifiable data", Codes: readV2("9Nu0")},
				{Name: "dissent_withdrawn", Description: "Dissent withdrawn for secondary use of GP patient identifiable data", Codes: readV2("9Nu1")},
			},
		},
		{
			Name:         "local_shared_record",
			Description:  "Upload to a local shared electronic record",
			DefaultState: "unknown",
			States: []State{
				{Name: "unknown", Description: "No decision recorded"},
				{Name: "consent", Description: "Consent given for upload to local shared electronic record", Codes: readV2("93C0")},
				{Name: "dissent", Description: "Refused consent for upload to local shared electronic record", Codes: readV2("93C1")},
			},
		},
	}
}

// LookupKind finds a kind of the registry by name. The Kind is the caller's
// own copy.
func LookupKind(name string) (Kind, bool) {
	k, ok := builtin().lookup(name)
	if !ok {
		return Kind{}, false
	}
	return k.clone(), true
}

// IsKind reports whether name is a kind of the registry.
func IsKind(name string) bool {
	_, ok := builtin().lookup(name)
	return ok
}

// DefaultState is the state of a patient with no decision of kind name
// recorded; ok is false for an unknown kind.
func DefaultState(name string) (state string, ok bool) {
	k, ok := builtin().lookup(name)
	if !ok {
		return "", false
	}
	return k.DefaultState, true
}

func (k *Kind) clone() Kind {
	c := *k
	c.States = make([]State, len(k.States))
	for i, st := range k.States {
		st.Codes = append([]Code(nil), st.Codes...)
		c.States[i] = st
	}
	return c
}
