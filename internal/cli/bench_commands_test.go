package cli

import (
	"slices"
	"testing"
)

// `bench all` runs the benchmarks in list order; the list is the one place they are registered.
func TestBenchSubcommands(t *testing.T) {
	var names []string
	for _, c := range benchSubcommands() {
		names = append(names, c.Name())
	}
	if want := []string{"ingest", "fanout", "credentials"}; !slices.Equal(names, want) {
		t.Fatalf("bench subcommands %v, want %v", names, want)
	}
	root := NewRootCommand()
	bench, _, err := root.Find([]string{"bench"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append(names, "all") {
		if c, _, err := bench.Find([]string{name}); err != nil || c.Name() != name {
			t.Errorf("bench %s: not found (%v)", name, err)
		}
	}
}
