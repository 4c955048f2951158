package cli

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// `bench all` runs the benchmarks in list order; the list is the one place they are registered.
func TestBenchSubcommands(t *testing.T) {
	var names []string
	for _, c := range benchSubcommands() {
		names = append(names, c.Name())
	}
	if want := []string{"ingest", "fanout", "credentials", "backfill", "subscriptions"}; !slices.Equal(names, want) {
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

// --cpuprofile covers what a benchmark's hooks bracket; under `bench all` each benchmark writes FILE.NAME.
func TestBenchProfiler(t *testing.T) {
	if start, stop := (&profiler{}).hooks("ingest"); start != nil || stop != nil {
		t.Fatal("hooks without --cpuprofile")
	}
	dir := t.TempDir()
	p := &profiler{path: filepath.Join(dir, "cpu.prof"), multi: true}
	for _, name := range []string{"ingest", "fanout"} {
		start, stop := p.hooks(name)
		start()
		stop()
		stop() // a second stop is harmless
		if fi, err := os.Stat(p.path + "." + name); err != nil || fi.Size() == 0 {
			t.Fatalf("profile of %s: %v", name, err)
		}
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
}

// `bench all` follows the fanout's defaults with its hot-orgs and 1,000-org scenarios, whose flags parse.
func TestFanoutVariants(t *testing.T) {
	want := map[string][2]string{"fanout-hot": {"hot-share", "0.9"}, "fanout-1000": {"orgs", "1000"}}
	runs := fanoutVariants(&profiler{})
	if len(runs) != len(want) {
		t.Fatalf("%d variants, want %d", len(runs), len(want))
	}
	for _, r := range runs {
		if err := r.cmd.ParseFlags(r.args); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, w := range want {
			if f := r.cmd.Flags().Lookup(w[0]); f != nil && f.Changed && f.Value.String() == w[1] {
				found = true
			}
		}
		if !found || r.cmd.Name() != "fanout" {
			t.Errorf("variant %s %v: flags not set", r.cmd.Name(), r.args)
		}
	}
}
