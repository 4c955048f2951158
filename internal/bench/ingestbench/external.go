package ingestbench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// External load generators written in C (wrk for HTTP, pgbench for the baseline) cost far less CPU per
// request than a Go client in the same process, which matters on a 2-core machine: the benchmark should
// measure the server, not the load generator. Each is used when installed; otherwise the Go drivers run.

const wrkScript = `
local reqs = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    local sig, body = line:match("^([^\t]+)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Stripe-Signature"] = sig}, body)
  end
  i = math.random(#reqs)
end
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WHDB %d %d %d %d %d\n", summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
`

// wrkDriver runs wrk against url with pre-signed distinct Stripe events (signed "now": well within tolerance).
type wrkDriver struct {
	bin, script, requests string
}

func newWrkDriver(dir, secret string, count int) (*wrkDriver, error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		return nil, err
	}
	d := &wrkDriver{bin: bin, script: filepath.Join(dir, "ingest.lua"), requests: filepath.Join(dir, "requests.tsv")}
	if err := os.WriteFile(d.script, []byte(wrkScript), 0o644); err != nil {
		return nil, err
	}
	f, err := os.Create(d.requests)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriter(f)
	now := time.Now()
	for i := 0; i < count; i++ {
		body := event(fmt.Sprintf("evt_wrk%020d", seq.Add(1)))
		fmt.Fprintf(w, "%s\t%s\n", sign(secret, body, now), body)
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return d, f.Close()
}

var wrkResult = regexp.MustCompile(`WHDB (\d+) (\d+) (\d+) (\d+) (\d+)`)

func (d *wrkDriver) run(ctx context.Context, url string, n int, dur time.Duration) (Result, error) {
	threads := 2
	if n < threads {
		threads = n
	}
	out, err := exec.CommandContext(ctx, d.bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(n),
		"-d", fmt.Sprintf("%ds", max(1, int(dur.Seconds()))), "--timeout", "30s", "-s", d.script, url, "--", d.requests).CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("error running wrk: %w: %s", err, out)
	}
	return parseWrk(out)
}

// parseWrk reads the line the script's done() writes; a run without one successful request is an error
// carrying wrk's output, not a zero to divide by.
func parseWrk(out []byte) (Result, error) {
	m := wrkResult.FindSubmatch(out)
	if m == nil {
		return Result{}, fmt.Errorf("unexpected wrk output: %s", out)
	}
	num := func(i int) int64 { v, _ := strconv.ParseInt(string(m[i]), 10, 64); return v }
	requests, errs := int(num(1)), int(num(2))
	res := Result{
		Ops:      requests - errs,
		Errors:   errs,
		P50:      time.Duration(num(3)) * time.Microsecond,
		P99:      time.Duration(num(4)) * time.Microsecond,
		Duration: time.Duration(num(5)) * time.Microsecond,
	}
	if res.Ops <= 0 || res.Duration <= 0 {
		return Result{}, fmt.Errorf("wrk completed no successful request (%d requests, %d errors): %s", requests, errs, out)
	}
	return res, nil
}

// pgbenchDriver runs one-row INSERT transactions of the same payload with pgbench.
type pgbenchDriver struct {
	bin, script, dir, dbURL string
	// connect is how long the warm-up's clients took to connect; rounds run that much longer. pgbench's -T
	// clock starts before its clients connect (one after the other per thread, each a scram-sha-256
	// exchange), so on a busy machine a short run can end before any transaction.
	connect time.Duration
}

func newPgbenchDriver(binDir, dir, dbURL string, orgID, integrationID int64) (*pgbenchDriver, error) {
	bin := filepath.Join(binDir, "pgbench")
	if _, err := os.Stat(bin); err != nil {
		return nil, err
	}
	// The payload comes from a one-row table: pgbench would read the colons in a JSON literal as variables.
	script := fmt.Sprintf(`\set n random(1, 1000000000)
INSERT INTO staging.webhooks (received_at, org_id, integration_id, delivery_id, method, path, query, content_type, headers, body, accepted) SELECT now(), %d, %d, 'evt_' || :n, 'POST', '/baseline', '', 'application/json', headers, body, true FROM bench_payload;
`, orgID, integrationID)
	d := &pgbenchDriver{bin: bin, script: filepath.Join(dir, "insert.sql"), dir: dir, dbURL: dbURL}
	return d, os.WriteFile(d.script, []byte(script), 0o644)
}

// warmUpTransactions per client: a count rather than a duration, so the warm-up lasts as long as connecting takes.
const warmUpTransactions = 20

// warmUp runs a fixed number of transactions per client and remembers how long connecting took.
func (d *pgbenchDriver) warmUp(ctx context.Context, n int) error {
	out, err := exec.CommandContext(ctx, d.bin, "-n", "-M", "prepared", "-c", strconv.Itoa(n), "-j", "2",
		"-t", strconv.Itoa(warmUpTransactions), "-f", d.script, d.dbURL).CombinedOutput()
	if err != nil {
		return fmt.Errorf("error running pgbench: %w: %s", err, out)
	}
	r, err := parsePgbench(out)
	if err != nil {
		return err
	}
	d.connect = r.connect
	return nil
}

func (d *pgbenchDriver) run(ctx context.Context, n int, dur time.Duration) (Result, error) {
	logDir, err := os.MkdirTemp(d.dir, "pgbench-log-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(logDir)
	secs := max(1, int(dur.Seconds())) + int(d.connect.Round(time.Second).Seconds())
	cmd := exec.CommandContext(ctx, d.bin, "-n", "-M", "prepared", "-c", strconv.Itoa(n), "-j", "2", "-T", strconv.Itoa(secs),
		"-f", d.script, "-l", "--log-prefix", filepath.Join(logDir, "tx"), d.dbURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("error running pgbench: %w: %s", err, out)
	}
	r, err := parsePgbench(out)
	if err != nil {
		return Result{}, err
	}
	lat, err := pgbenchLatencies(logDir)
	if err != nil {
		return Result{}, err
	}
	// The rate is pgbench's own, which leaves connecting out; the duration is the time that rate covers.
	res := Result{Ops: r.transactions, Duration: time.Duration(float64(r.transactions) / r.tps * float64(time.Second))}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return res, nil
}

// pgbench's summary: PostgreSQL 14 and later print "initial connection time = X ms" and
// "tps = N (without initial connection time)"; 13 and earlier print "tps = N (including connections
// establishing)" and "tps = N (excluding connections establishing)". The rate without connecting is the
// one to compare. With no transaction at all, pgbench prints neither tps line and still exits 0.
var (
	pgbenchTPS          = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)`)
	pgbenchTransactions = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	pgbenchConnect      = regexp.MustCompile(`(?m)^initial connection time = ([0-9.]+) ms`)
)

type pgbenchSummary struct {
	transactions int
	tps          float64
	connect      time.Duration // zero before PostgreSQL 14
}

// parsePgbench reads pgbench's summary; a run without a transaction is an error carrying pgbench's output.
func parsePgbench(out []byte) (pgbenchSummary, error) {
	var s pgbenchSummary
	m := pgbenchTransactions.FindSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("unexpected pgbench output: %s", out)
	}
	s.transactions, _ = strconv.Atoi(string(m[1]))
	if s.transactions == 0 {
		return s, fmt.Errorf("pgbench completed no transactions: %s", out)
	}
	if m = pgbenchTPS.FindSubmatch(out); m == nil {
		return s, fmt.Errorf("unexpected pgbench output (no tps excluding connection time): %s", out)
	}
	var err error
	if s.tps, err = strconv.ParseFloat(string(m[1]), 64); err != nil || s.tps <= 0 {
		return s, fmt.Errorf("unexpected pgbench tps %q: %s", m[1], out)
	}
	if m = pgbenchConnect.FindSubmatch(out); m != nil {
		msecs, _ := strconv.ParseFloat(string(m[1]), 64)
		s.connect = time.Duration(msecs * float64(time.Millisecond))
	}
	return s, nil
}

// pgbenchLatencies reads per-transaction logs: "client_id transaction_no time_us script_no epoch epoch_us".
func pgbenchLatencies(dir string) ([]time.Duration, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "tx*"))
	var out []time.Duration
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 {
				continue
			}
			us, err := strconv.ParseInt(fields[2], 10, 64)
			if err == nil {
				out = append(out, time.Duration(us)*time.Microsecond)
			}
		}
		fh.Close()
	}
	return out, nil
}
