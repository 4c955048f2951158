// Package vaultdev runs a Vault dev server (`vault server -dev`) for `webhookdb dev` and the tests: in memory,
// unsealed, on a free loopback port, with a random root token, and with the database and transit engines mounted.
//
// The binary is built from the Go module proxy by `make vault` into bin/vault (see tools/vault).
package vaultdev

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

var (
	// ErrBinaryNotFound means bin/vault has not been built.
	ErrBinaryNotFound = errors.New("vault binary not found: run `make vault` (builds bin/vault from the Go module proxy, ~12 minutes the first time) or set WEBHOOKDB_VAULT_BIN")
)

// Config says how to run the dev server.
type Config struct {
	// Bin is the vault binary; default FindBinary().
	Bin string
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// RootToken; default random.
	RootToken string
	// Logger receives the server's output at debug level; default slog.Default().
	Logger *slog.Logger
}

// Server is a running dev server owned by this process.
type Server struct {
	Addr  string // http://127.0.0.1:port
	Token string

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	tail []string
}

// FindBinary looks for vault in $WEBHOOKDB_VAULT_BIN, beside the running executable, in the checkout's bin/, then in PATH.
func FindBinary() (string, error) {
	if p := os.Getenv("WEBHOOKDB_VAULT_BIN"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("WEBHOOKDB_VAULT_BIN=%s: %w", p, ErrBinaryNotFound)
	}
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "vault"))
	}
	if root, ok := checkoutRoot(); ok {
		candidates = append(candidates, filepath.Join(root, "bin", "vault"))
	}
	for _, c := range candidates {
		if isExecutable(c) {
			return c, nil
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	return "", ErrBinaryNotFound
}

// checkoutRoot walks up from the working directory to the directory holding webhookdb's go.mod.
func checkoutRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/webhookdb-go/webhookdb\n") {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Start runs the dev server and waits until it is unsealed and answering, then mounts database and transit.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Bin == "" {
		bin, err := FindBinary()
		if err != nil {
			return nil, err
		}
		cfg.Bin = bin
	}
	if cfg.RootToken == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		cfg.RootToken = "whdb-root-" + hex.EncodeToString(b)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := cfg.Port
		if port == 0 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("error finding a free port: %w", err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		s, err := start(ctx, cfg, port)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if cfg.Port != 0 {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, cfg Config, port int) (*Server, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(cfg.Bin, "server", "-dev",
		"-dev-root-token-id="+cfg.RootToken,
		"-dev-listen-address="+addr,
		"-dev-no-store-token",
		"-log-level=warn",
	)
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+os.TempDir())
	// The dev server keeps everything in memory: nothing is lost if it dies with its parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("error creating pipe: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("error starting %s: %w", cfg.Bin, err)
	}
	s := &Server{Addr: "http://" + addr, Token: cfg.RootToken, cmd: cmd, done: make(chan struct{})}
	go s.drain(out, cfg.Logger)
	go func() { _ = cmd.Wait(); close(s.done) }()

	if err := s.waitHealthy(ctx, 60*time.Second); err != nil {
		_ = s.Stop()
		return nil, err
	}
	client, err := s.Client()
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := EnableEngines(ctx, client); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// drain logs the server's output and keeps its last lines for error messages.
func (s *Server) drain(r io.Reader, logger *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		logger.Debug("vault", slog.String("line", line))
		s.mu.Lock()
		s.tail = append(s.tail, line)
		if len(s.tail) > 30 {
			s.tail = s.tail[len(s.tail)-30:]
		}
		s.mu.Unlock()
	}
}

func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

func (s *Server) waitHealthy(ctx context.Context, timeout time.Duration) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("vault exited during start-up:\n%s", s.output())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		h, err := client.Sys().HealthWithContext(hctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault did not become healthy within %s (last error: %v):\n%s", timeout, err, s.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client returns an API client authenticated with the root token.
func (s *Server) Client() (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 2
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("error creating vault client: %w", err)
	}
	c.SetToken(s.Token)
	return c, nil
}

// Stop ends the server (its state is in memory and is gone).
func (s *Server) Stop() error {
	if s.cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	return nil
}

// Engines are the secrets engines webhookdb uses, by mount path.
var Engines = map[string]string{"database": "database", "transit": "transit"}

// EnableEngines mounts the database and transit secrets engines unless they are mounted already.
func EnableEngines(ctx context.Context, client *vaultapi.Client) error {
	mounts, err := client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("error listing vault mounts: %w", err)
	}
	for path, typ := range Engines {
		if m, ok := mounts[path+"/"]; ok {
			if m.Type != typ {
				return fmt.Errorf("vault mount %s/ is of type %s, want %s", path, m.Type, typ)
			}
			continue
		}
		if err := client.Sys().MountWithContext(ctx, path, &vaultapi.MountInput{Type: typ}); err != nil {
			return fmt.Errorf("error mounting %s at %s/: %w", typ, path, err)
		}
	}
	return nil
}
