// Package bench holds the benchmarks (one package each); this test keeps them out of the capability packages.
package bench

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/webhookdb-go/webhookdb"

// Benchmarks depend on the capability packages, never the reverse: only the command line may reach them.
func TestOnlyTheCLIDependsOnBenchmarks(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list packages with")
	}
	cmd := exec.Command(goBin, "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String()) // an import cycle through a benchmark shows here
	}
	allowed := func(pkg string) bool {
		return pkg == module+"/cmd/webhookdb" || pkg == module+"/internal/cli" || strings.HasPrefix(pkg, module+"/internal/bench/")
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 || allowed(fields[0]) {
			continue
		}
		for _, dep := range fields[1:] {
			if strings.HasPrefix(dep, module+"/internal/bench/") {
				t.Errorf("%s depends on the benchmark package %s", fields[0], dep)
			}
		}
	}
}
