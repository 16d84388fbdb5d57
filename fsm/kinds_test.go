package fsm

import "testing"

// The exported lookups share one registry; a caller changing what it was
// given must not change what the next caller, or apply, sees.
func TestLookupKindGivesACopy(t *testing.T) {
	k, ok := LookupKind("scr")
	if !ok {
		t.Fatal("scr is not a kind")
	}
	k.DefaultState = "dissent"
	k.States[0].Name = "changed"
	k.States[3].Codes[0].Code = "XXXX"

	again, _ := LookupKind("scr")
	want := Kinds()[0]
	if again.DefaultState != want.DefaultState || again.States[0].Name != want.States[0].Name ||
		again.States[3].Codes[0].Code != want.States[3].Codes[0].Code {
		t.Fatalf("a caller's change reached the registry: %+v", again)
	}
	if def, _ := DefaultState("scr"); def != "implied_core" {
		t.Fatalf("DefaultState(scr) = %q after a caller's change", def)
	}
	if err := ValidateKind("kind", "scr"); err != nil {
		t.Fatal(err)
	}
}

func TestKindLookups(t *testing.T) {
	for _, k := range Kinds() {
		if !IsKind(k.Name) {
			t.Errorf("IsKind(%q) = false", k.Name)
		}
		if def, ok := DefaultState(k.Name); !ok || def != k.DefaultState {
			t.Errorf("DefaultState(%q) = %q, %v; want %q", k.Name, def, ok, k.DefaultState)
		}
		if got, ok := LookupKind(k.Name); !ok || got.Name != k.Name || len(got.States) != len(k.States) {
			t.Errorf("LookupKind(%q) = %+v, %v", k.Name, got, ok)
		}
	}
	for _, name := range []string{"", "SCR", "national_data_opt_out"} {
		if IsKind(name) {
			t.Errorf("IsKind(%q) = true", name)
		}
		if _, ok := DefaultState(name); ok {
			t.Errorf("DefaultState(%q) ok", name)
		}
		if _, ok := LookupKind(name); ok {
			t.Errorf("LookupKind(%q) ok", name)
		}
	}
}
