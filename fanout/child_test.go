package fanout_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/integrations"
	"github.com/webhookdb-go/webhookdb/internal/pgcluster"
	"github.com/webhookdb-go/webhookdb/internal/pgtest"
)

// child is a consumer running in a subprocess.
type child struct {
	t   *testing.T
	cmd *exec.Cmd
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// fanoutBinary builds the webhookdb binary once per test binary, without the race detector: the subprocess
// tests run `webhookdb fanout`, measure its memory and kill it.
func fanoutBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "whdb-fanout-bin-")
		if err != nil {
			buildErr = err
			return
		}
		pgtest.AtExit(func() { _ = os.RemoveAll(dir) })
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		binPath = filepath.Join(dir, "webhookdb")
		cmd := exec.Command(goBin, "build", "-o", binPath, "github.com/webhookdb-go/webhookdb/cmd/webhookdb")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startChild runs `webhookdb fanout` on the env's slot with extra flags. It writes with its own writer login
// (postgres credentials mode), whose password it rotates on the org databases' server: give child tests a
// cluster of their own for their orgs, or tests sharing a server would change each other's password.
func (e *env) startChild(flags ...string) *child {
	e.t.Helper()
	args := append([]string{"fanout", "--database-url", e.appURL, "--encryption", "keyring", "--credentials", "postgres",
		"--slot", e.slot, "--log-level", childLogLevel()}, flags...)
	cmd := exec.Command(fanoutBinary(e.t), args...)
	cmd.Env = append(os.Environ(), "WEBHOOKDB_KEYRING="+e.keyring)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	ch := &child{t: e.t, cmd: cmd}
	e.t.Cleanup(func() {
		if ch.cmd.ProcessState == nil {
			_ = ch.cmd.Process.Kill()
			_ = ch.cmd.Wait()
		}
	})
	return ch
}

// kill sends SIGKILL and reaps the process.
func (ch *child) kill() {
	ch.t.Helper()
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		ch.t.Fatal(err)
	}
	_ = ch.cmd.Wait()
}

// stop ends the process gracefully.
func (ch *child) stop() {
	ch.t.Helper()
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		ch.t.Fatal(err)
	}
	if err := ch.cmd.Wait(); err != nil {
		ch.t.Fatalf("fanout process: %v", err)
	}
}

// peakRSS is the process's peak resident set size (VmHWM), in bytes.
func (ch *child) peakRSS() int64 {
	ch.t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", ch.cmd.Process.Pid))
	if err != nil {
		ch.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				ch.t.Fatal(err)
			}
			return kb << 10
		}
	}
	ch.t.Fatal("no VmHWM in /proc status")
	return 0
}

func childLogLevel() string {
	if os.Getenv("FANOUT_TEST_LOG") != "" {
		return "debug"
	}
	return "warn"
}

// waitSlotActive waits until a consumer streams from the env's slot: changes committed before the slot
// is consistent never reach the fanout. A slot being created is already active (its creating backend holds
// it while it waits for running transactions), so this waits for a walsender streaming from it.
func (e *env) waitSlotActive() {
	e.t.Helper()
	eventually(e.t, 30*time.Second, "the fanout to stream from its slot", func() (bool, error) {
		var n int
		err := e.pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1`, e.slot).Scan(&n)
		return n == 1, err
	})
}

// writerOrg is an org on a database server of its own with a json_v1 integration keyed by "id", and a child
// fanout streaming, which logs in to that server as webhookdb_fanout with the password it stores. waitRows
// waits until the org's json_v1 table holds want rows.
func (e *env) writerOrg() (o *org, in *integrations.Integration, orgServer *pgcluster.Cluster, waitRows func(what string, want int)) {
	e.t.Helper()
	orgServer = pgtest.NewCluster(e.t)
	o = e.org(orgServer)
	in = e.integration(o, "json_v1", `{"remote_key_path":"id"}`)
	ch := e.startChild()
	e.t.Cleanup(ch.stop)
	e.waitSlotActive()
	db := e.orgDB(o)
	waitRows = func(what string, want int) {
		e.t.Helper()
		eventually(e.t, 45*time.Second, what, func() (bool, error) {
			var n int
			err := db.QueryRow(context.Background(), `SELECT count(*) FROM json_v1`).Scan(&n)
			return n == want, err
		})
	}
	return o, in, orgServer, waitRows
}
