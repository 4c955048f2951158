package pgcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const ownerFile = "owner.pid"

// writeOwner records which process started the cluster, so a later run can tell an orphan from a live cluster.
func writeOwner(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("error writing owner file: %w", err)
	}
	return nil
}

// ReapOrphans removes throwaway clusters (directories matching pattern, e.g. os.TempDir()+"/whdb-pgtest-*")
// whose owning process is gone: a test binary killed mid-run leaves its server running, and this ends it.
func ReapOrphans(pattern string) {
	dirs, _ := filepath.Glob(pattern)
	for _, dir := range dirs {
		if alive(readPid(filepath.Join(dir, ownerFile))) {
			continue
		}
		info, err := os.Stat(dir)
		if err != nil || time.Since(info.ModTime()) < 10*time.Second && readPid(filepath.Join(dir, ownerFile)) == 0 {
			continue // being set up right now by another process
		}
		if pid := readPid(filepath.Join(dir, "data", "postmaster.pid")); alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGQUIT) // immediate shutdown: the data is thrown away anyway
			waitGone(pid, 10*time.Second)
		}
		_ = os.RemoveAll(dir)
	}
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
