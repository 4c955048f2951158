package pgtest

import (
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections accepted on a loopback address to a loopback port, and counts them. It stops
// accepting with Close or at the end of the test.
type Proxy struct {
	// Addr is the address it listens on.
	Addr     string
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

// NewProxy listens on listen (e.g. "127.0.0.1:0") and forwards to 127.0.0.1:toPort.
func NewProxy(t testing.TB, listen string, toPort int) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln}
	t.Cleanup(p.Close)
	p.wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			upstream, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(toPort)))
			if err != nil {
				client.Close()
				continue
			}
			go func() { _, _ = io.Copy(upstream, client); upstream.Close() }()
			go func() { _, _ = io.Copy(client, upstream); client.Close() }()
		}
	})
	return p
}

// Accepted is how many connections it has accepted.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Close stops accepting; forwarded connections run until either side closes.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.wg.Wait()
}
