// Package cpuacct splits the CPU time a benchmark phase costs between the benchmark's own process and the
// processes of a PostgreSQL cluster (client backends, walsenders, background processes), read from /proc, so
// a benchmark can say where its time went rather than only how long it took.
package cpuacct

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sample is cumulative CPU time by kind of process at one moment.
type Sample struct {
	Self         time.Duration // this process
	Backends     time.Duration // client backends of the cluster, live or exited since (the postmaster's reaped children)
	Walsenders   time.Duration
	Apply        time.Duration // logical replication apply workers (native replication)
	Background   time.Duration // checkpointer, background writer, WAL writer, autovacuum, launchers
	Postmaster   time.Duration // the postmaster itself: mostly forking a process per new connection
	at           time.Time
	postmasterOK bool
}

// clockTick is USER_HZ, which /proc reports times in; 100 on every Linux that runs this.
const clockTick = 100

// Take samples this process and, when dataDir names a running cluster's data directory, its processes.
func Take(dataDir string) Sample {
	s := Sample{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.Self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	pm := postmasterPID(dataDir)
	if pm == 0 {
		return s
	}
	if f := statFields(pm); f != nil {
		// cutime + cstime: children that have exited (backends of closed connections)
		s.Backends += ticks(f[13]) + ticks(f[14])
		s.Postmaster = ticks(f[11]) + ticks(f[12])
		s.postmasterOK = true
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if f == nil || f[1] != strconv.Itoa(pm) { // field 4 (ppid), after pid and comm were cut
			continue
		}
		t := ticks(f[11]) + ticks(f[12])
		title, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		switch kind := string(title); {
		case strings.Contains(kind, "walsender"):
			s.Walsenders += t
		case strings.HasPrefix(kind, "postgres: logical replication") && !strings.Contains(kind, "launcher"):
			s.Apply += t
		case strings.HasPrefix(kind, "postgres: checkpointer"), strings.HasPrefix(kind, "postgres: background writer"),
			strings.HasPrefix(kind, "postgres: walwriter"), strings.HasPrefix(kind, "postgres: autovacuum"),
			strings.HasPrefix(kind, "postgres: logical replication"), strings.HasPrefix(kind, "postgres: stats"),
			strings.HasPrefix(kind, "postgres: archiver"):
			s.Background += t
		default:
			s.Backends += t
		}
	}
	return s
}

// Postgres is the cluster's CPU between two samples (every kind of process), false when it is not known.
func Postgres(from, to Sample) (time.Duration, bool) {
	if !from.postmasterOK || !to.postmasterOK {
		return 0, false
	}
	sum := func(s Sample) time.Duration { return s.Backends + s.Walsenders + s.Apply + s.Background + s.Postmaster }
	return sum(to) - sum(from), true
}

// Report says what the phase between two samples cost, per kind of process, in CPU seconds and cores.
func Report(from, to Sample) string {
	wall := to.at.Sub(from.at).Seconds()
	part := func(name string, d time.Duration) string {
		return fmt.Sprintf("%s %.1fs (%.2f cores)", name, d.Seconds(), d.Seconds()/wall)
	}
	parts := []string{part("this process", to.Self-from.Self)}
	if from.postmasterOK && to.postmasterOK {
		parts = append(parts, part("postgres backends", to.Backends-from.Backends), part("walsenders", to.Walsenders-from.Walsenders))
		if d := to.Apply - from.Apply; d > 0 {
			parts = append(parts, part("apply workers", d))
		}
		parts = append(parts, part("postgres background", to.Background-from.Background))
		if d := to.Postmaster - from.Postmaster; d > 0 {
			parts = append(parts, part("postmaster", d))
		}
	}
	return fmt.Sprintf("CPU over %.1fs: %s", wall, strings.Join(parts, ", "))
}

// ProcessCPU is the CPU time a live process has run so far, in nanoseconds from /proc/PID/schedstat (clock
// ticks are too coarse for one connection's start); 0 when unknown.
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "schedstat"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), " ")
	ns, _ := strconv.ParseInt(first, 10, 64)
	return time.Duration(ns)
}

// PostmasterCPU is the CPU time the postmaster of the cluster in dataDir has run itself (not its children).
func PostmasterCPU(dataDir string) time.Duration {
	pm := postmasterPID(dataDir)
	if pm == 0 {
		return 0
	}
	return ProcessCPU(pm)
}

// Children counts the processes of the cluster at dataDir (the postmaster's children, exited but not yet
// reaped ones included), -1 when it is not known. A phase that ends with connections closing waits for the
// count to fall back before the next phase starts, so their CPU is not counted in it.
func Children(dataDir string) int {
	pm := postmasterPID(dataDir)
	if pm == 0 {
		return -1
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); f != nil && f[1] == strconv.Itoa(pm) {
			n++
		}
	}
	return n
}

func postmasterPID(dataDir string) int {
	if dataDir == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

// statFields are the fields of /proc/PID/stat after the command name: [0] is the state, [1] the parent pid,
// [11]/[12] utime/stime and [13]/[14] cutime/cstime, in clock ticks.
func statFields(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 > len(b) {
		return nil
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 15 {
		return nil
	}
	return f
}

func ticks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * time.Second / clockTick
}
