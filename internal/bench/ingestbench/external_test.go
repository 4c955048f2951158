package ingestbench

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// pgbench 15.18 with -T 3, its clients taking 2 s to connect.
const pgbench15 = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/pgt/s.sql
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 1204
number of failed transactions: 0 (0.000%)
latency average = 3.299 ms
initial connection time = 2016.444 ms
tps = 1212.582660 (without initial connection time)
`

// pgbench 15.18 with -T 1, its clients taking 2 s to connect: no transaction, no tps line, exit status 0.
const pgbench15None = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/pgt/s.sql
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 1 s
number of transactions actually processed: 0
number of failed transactions: 0 (NaN%)
`

// pgbench 13 and earlier, with -t.
const pgbench13 = `transaction type: insert.sql
scaling factor: 1
query mode: prepared
number of clients: 64
number of threads: 2
number of transactions per client: 20
number of transactions actually processed: 1280/1280
latency average = 9.120 ms
tps = 7017.543210 (including connections establishing)
tps = 7342.111111 (excluding connections establishing)
`

func TestParsePgbench(t *testing.T) {
	s, err := parsePgbench([]byte(pgbench15))
	if err != nil {
		t.Fatal(err)
	}
	if s.transactions != 1204 || s.tps != 1212.582660 || s.connect != 2016444*time.Microsecond {
		t.Fatalf("PostgreSQL 15: %+v", s)
	}
	if s, err = parsePgbench([]byte(pgbench13)); err != nil {
		t.Fatal(err)
	}
	if s.transactions != 1280 || s.tps != 7342.111111 || s.connect != 0 {
		t.Fatalf("PostgreSQL 13: %+v", s)
	}
	for name, out := range map[string]string{"no transaction": pgbench15None, "garbage": "pgbench: error: connection refused\n"} {
		_, err := parsePgbench([]byte(out))
		if err == nil || !strings.Contains(err.Error(), out) {
			t.Errorf("%s: error %v, want one carrying the output", name, err)
		}
	}
}

func TestParseWrk(t *testing.T) {
	out := "Running 3s test @ http://127.0.0.1:1/v1/webhooks/x\n  2 threads and 64 connections\nWHDB 24000 10 2400 10000 3000123\n"
	r, err := parseWrk([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 23990 || r.Errors != 10 || r.P50 != 2400*time.Microsecond || r.Duration != 3000123*time.Microsecond {
		t.Fatalf("%+v", r)
	}
	for name, out := range map[string]string{
		"no request":     "Running 1s test\nWHDB 0 0 0 0 1000000\n",
		"only errors":    "Running 1s test\nWHDB 64 64 0 0 1000000\n",
		"no done() line": "unable to connect to 127.0.0.1:1 Connection refused\n",
	} {
		_, err := parseWrk([]byte(out))
		if err == nil || !strings.Contains(err.Error(), out) {
			t.Errorf("%s: error %v, want one carrying the output", name, err)
		}
	}
}

func TestDriveFailsWithoutSuccess(t *testing.T) {
	_, err := drive(t.Context(), "the test driver", 2, 20*time.Millisecond, func() error { return errors.New("status 503") })
	if err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("error %v, want one carrying the failure", err)
	}
	r, err := drive(t.Context(), "the test driver", 2, 20*time.Millisecond, func() error { return nil })
	if err != nil || r.Ops == 0 {
		t.Fatalf("result %+v, error %v", r, err)
	}
}
