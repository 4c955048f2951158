package savedquery

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// QueryError is a saved query's own failure (its SQL failed or ran past its timeout), as opposed to not reaching
// the database. A public result caches it like a result, so a broken query costs its database once per TTL.
type QueryError struct {
	// Code is "sql_error" or "sql_timeout"; SQLState the server's code, when it sent one.
	Code     string
	SQLState string
	// Message is the server's message: the org's own (members see it); the public never does.
	Message string
}

func (e *QueryError) Error() string { return e.Message }

// Cache holds public results for a short TTL, in a bounded number of bytes, so a public URL fetched often runs
// its query at most once per TTL per server process: concurrent misses of one key share one run.
type Cache struct {
	ttl      time.Duration
	maxBytes int
	now      func() time.Time

	group singleflight.Group

	mu    sync.Mutex
	items map[string]*list.Element
	// order is by insertion, which with one TTL is also by expiry: the front expires first.
	order *list.List
	bytes int
}

type cached struct {
	key     string
	res     *Result
	err     *QueryError
	expires time.Time
	size    int
}

// NewCache returns a cache of results kept ttl, at most maxBytes in all.
func NewCache(ttl time.Duration, maxBytes int) *Cache {
	return &Cache{ttl: ttl, maxBytes: maxBytes, now: time.Now, items: map[string]*list.Element{}, order: list.New()}
}

// Get returns key's result while it is fresh; otherwise fill runs (once for all concurrent callers, on a
// context of its own so that one caller hanging up does not fail the others) and its result, or its
// QueryError, is kept for the TTL. Age is how old the result is.
func (c *Cache) Get(ctx context.Context, key string, fill func(ctx context.Context) (*Result, error)) (res *Result, age time.Duration, err error) {
	if res, err, at, ok := c.lookup(key); ok {
		return res, c.now().Sub(at), errOrNil(err)
	}
	ch := c.group.DoChan(key, func() (any, error) {
		if res, err, _, ok := c.lookup(key); ok {
			return res, errOrNil(err)
		}
		res, err := fill(context.WithoutCancel(ctx))
		var qe *QueryError
		switch {
		case err == nil:
			c.store(key, res, nil)
		case errors.As(err, &qe):
			c.store(key, nil, qe)
		}
		return res, err
	})
	select {
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case r := <-ch:
		res, _ := r.Val.(*Result)
		if res != nil {
			age = c.now().Sub(res.GeneratedAt)
		}
		return res, max(age, 0), r.Err
	}
}

func errOrNil(e *QueryError) error {
	if e == nil {
		return nil
	}
	return e
}

func (c *Cache) lookup(key string) (*Result, *QueryError, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, nil, time.Time{}, false
	}
	e := el.Value.(*cached)
	if !c.now().Before(e.expires) {
		c.remove(el)
		return nil, nil, time.Time{}, false
	}
	return e.res, e.err, e.expires.Add(-c.ttl), true
}

func (c *Cache) store(key string, res *Result, qe *QueryError) {
	size := 256 + len(key)
	if res != nil {
		size += res.Size()
	}
	if qe != nil {
		size += len(qe.Message)
	}
	if size > c.maxBytes || c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	// Expired entries first, then the oldest, until the new one fits.
	for c.bytes+size > c.maxBytes && c.order.Len() > 0 {
		c.remove(c.order.Front())
	}
	c.items[key] = c.order.PushBack(&cached{key: key, res: res, err: qe, expires: c.now().Add(c.ttl), size: size})
	c.bytes += size
}

func (c *Cache) remove(el *list.Element) {
	e := el.Value.(*cached)
	c.order.Remove(el)
	delete(c.items, e.key)
	c.bytes -= e.size
}

// Forget drops key's result (its query changed or was deleted).
func (c *Cache) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
}
