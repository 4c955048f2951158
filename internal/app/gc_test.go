package app

import (
	"runtime/debug"
	"testing"
)

// gcPercent reads the GC percent without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	before, beforeLimit := gcPercent(), debug.SetMemoryLimit(-1)
	for _, tc := range []struct {
		roles       []Role
		percent     int
		limitChange bool
	}{
		{[]Role{RoleIngest, RoleAPI}, 400, true},
		{AllRoles, 200, true},
		{[]Role{RoleFanout}, before, false},
	} {
		restore := TuneGC(tc.roles, 64<<20)
		if got := gcPercent(); got != tc.percent {
			t.Errorf("roles %v: GOGC %d, want %d", tc.roles, got, tc.percent)
		}
		if limit := debug.SetMemoryLimit(-1); tc.limitChange && limit != 256<<20 || !tc.limitChange && limit != beforeLimit {
			t.Errorf("roles %v: memory limit %d", tc.roles, limit)
		}
		restore()
		if gcPercent() != before || debug.SetMemoryLimit(-1) != beforeLimit {
			t.Errorf("roles %v: not restored", tc.roles)
		}
	}
	t.Setenv("GOGC", "150")
	restore := TuneGC(AllRoles, 0)
	defer restore()
	if got := gcPercent(); got != before {
		t.Errorf("GOGC set in the environment: GOGC changed to %d", got)
	}
}
