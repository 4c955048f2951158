package savedquery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestCache(ttl time.Duration, maxBytes int) (*Cache, *clock) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := NewCache(ttl, maxBytes)
	c.now = clk.Now
	return c, clk
}

func result(clk *clock, rows int) *Result {
	r := &Result{Format: JSON, GeneratedAt: clk.Now()}
	for range rows {
		r.rows = append(r.rows, []byte("[1]"))
		r.size += 4
	}
	return r
}

// A result is served again until the TTL passes; the query's own failure is kept too, other errors are not.
func TestCacheTTLAndErrors(t *testing.T) {
	t.Parallel()
	c, clk := newTestCache(30*time.Second, 1<<20)
	var fills atomic.Int32
	fill := func(context.Context) (*Result, error) { fills.Add(1); return result(clk, int(fills.Load())), nil }
	ctx := context.Background()
	r1, _, err := c.Get(ctx, "k", fill)
	if err != nil || r1.RowCount() != 1 {
		t.Fatal(r1, err)
	}
	clk.Advance(29 * time.Second)
	r2, age, err := c.Get(ctx, "k", fill)
	if err != nil || r2 != r1 || age != 29*time.Second || fills.Load() != 1 {
		t.Fatalf("within the TTL: %v %s %v, %d fills", r2, age, err, fills.Load())
	}
	clk.Advance(time.Second)
	if r3, _, _ := c.Get(ctx, "k", fill); r3.RowCount() != 2 || fills.Load() != 2 {
		t.Fatalf("after the TTL: %d fills", fills.Load())
	}

	qe := &QueryError{Code: "sql_error", SQLState: "42P01", Message: "gone"}
	failing := func(context.Context) (*Result, error) { fills.Add(1); return nil, qe }
	for range 3 {
		if _, _, err := c.Get(ctx, "broken", failing); !errors.Is(err, qe) {
			t.Fatal(err)
		}
	}
	if fills.Load() != 3 {
		t.Fatalf("a failing query ran %d times within the TTL", fills.Load()-2)
	}
	down := errors.New("cannot connect")
	unreachable := func(context.Context) (*Result, error) { fills.Add(1); return nil, down }
	for range 2 {
		if _, _, err := c.Get(ctx, "down", unreachable); !errors.Is(err, down) {
			t.Fatal(err)
		}
	}
	if fills.Load() != 5 {
		t.Fatalf("an unreachable database was cached: %d fills", fills.Load())
	}
}

// Concurrent misses of one key share one run; a caller that gives up does not fail the others.
func TestCacheOneRunForConcurrentMisses(t *testing.T) {
	t.Parallel()
	c, clk := newTestCache(time.Minute, 1<<20)
	release := make(chan struct{})
	var fills atomic.Int32
	fill := func(ctx context.Context) (*Result, error) {
		fills.Add(1)
		<-release
		return result(clk, 1), ctx.Err()
	}
	gone, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 11)
	go func() { _, _, err := c.Get(gone, "k", fill); errs <- err }()
	for range 10 {
		go func() { _, _, err := c.Get(context.Background(), "k", fill); errs <- err }()
	}
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up: %v", err)
	}
	close(release)
	for range 10 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if fills.Load() != 1 {
		t.Fatalf("%d runs for concurrent misses", fills.Load())
	}
}

// The cache holds at most its bytes: the oldest results go first, and one larger than the whole is not kept.
func TestCacheBytes(t *testing.T) {
	t.Parallel()
	one := result(&clock{}, 10).Size() + 256 + 1
	c, clk := newTestCache(time.Minute, 3*one)
	ctx := context.Background()
	var fills atomic.Int32
	fill := func(rows int) func(context.Context) (*Result, error) {
		return func(context.Context) (*Result, error) { fills.Add(1); return result(clk, rows), nil }
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		if _, _, err := c.Get(ctx, k, fill(10)); err != nil {
			t.Fatal(err)
		}
	}
	if c.bytes > 3*one || len(c.items) != 3 {
		t.Fatalf("%d bytes in %d items, budget %d", c.bytes, len(c.items), 3*one)
	}
	_, _, _ = c.Get(ctx, "a", fill(10)) // the oldest went first: a runs again
	_, _, _ = c.Get(ctx, "d", fill(10)) // d is still there
	if fills.Load() != 5 {
		t.Fatalf("%d fills", fills.Load())
	}
	_, _, _ = c.Get(ctx, "huge", fill(10000))
	_, _, _ = c.Get(ctx, "huge", fill(10000))
	if fills.Load() != 7 || c.items["huge"] != nil {
		t.Fatalf("a result larger than the cache: %d fills", fills.Load())
	}
}

func TestFirstKeyword(t *testing.T) {
	t.Parallel()
	for sql, want := range map[string]string{
		"SELECT 1": "select", "  ((with x as (select 1) select * from x))": "with", "/* a /* nested */ comment */ VALUES (1)": "values",
		"-- line\n\tTable t": "table", "-- only": "", "/* open": "", "": "", "insert into t": "insert", "$$x": "$", "ANALYZE t": "analyze",
	} {
		if got := firstKeyword(sql); got != want {
			t.Errorf("firstKeyword(%q) = %q, want %q", sql, got, want)
		}
	}
}
