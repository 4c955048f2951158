package pgcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the cluster's superuser role.
const Superuser = "postgres"

var (
	// ErrBinariesNotFound means no PostgreSQL server binaries were found on this machine.
	ErrBinariesNotFound = errors.New("PostgreSQL server binaries not found (install Debian's postgresql package: apt-get install -y postgresql)")
)

// Config says where and how to run a cluster.
type Config struct {
	// Dir holds the data directory, the socket and the log. An existing cluster in Dir is reused.
	Dir string
	// Port to listen on at 127.0.0.1; 0 reuses the port of an earlier run when it is free, else picks a free one.
	Port int
	// MaxConnections is max_connections; default 300 (the fanout holds up to half, see fanout.Config).
	MaxConnections int
	// Settings are extra postgresql.conf settings, applied on every start.
	Settings map[string]string
	// Logger receives progress messages; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy of the config with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.MaxConnections == 0 {
		c.MaxConnections = 300
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Dir == "" {
		return errors.New("pgcluster: Dir is required")
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("pgcluster: invalid port %d", c.Port)
	}
	return nil
}

// Cluster is a running PostgreSQL server owned by this process.
type Cluster struct {
	Dir       string
	DataDir   string
	SocketDir string
	Port      int
	binDir    string
	password  string
	cred      *syscall.Credential
	logger    *slog.Logger
}

// Start initialises the cluster if Dir holds none yet, then starts it and waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("error resolving cluster dir: %w", err)
	}
	c := &Cluster{Dir: dir, DataDir: filepath.Join(dir, "data"), binDir: binDir, logger: cfg.Logger}
	if c.cred, err = serverCredential(); err != nil {
		return nil, err
	}
	if err := c.prepareDirs(); err != nil {
		return nil, err
	}
	// Owned from the start: initdb on a loaded machine can outlast the grace ReapOrphans gives a directory
	// without an owner, and another test binary would reap a cluster still being made.
	if err := writeOwner(c.Dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	pw, err := os.ReadFile(filepath.Join(dir, "superuser-password"))
	if err != nil {
		return nil, fmt.Errorf("error reading superuser password: %w", err)
	}
	c.password = strings.TrimSpace(string(pw))
	// A previous run that crashed may have left its server running on this data directory.
	c.stopStale(ctx)

	port := cfg.Port
	if port == 0 {
		port = c.previousPort()
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if port == 0 || !portFree(port) {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		c.Port = port
		if lastErr = c.start(ctx, cfg); lastErr == nil {
			_ = os.WriteFile(filepath.Join(dir, "port"), []byte(strconv.Itoa(port)), 0o644)
			return c, nil
		}
		if cfg.Port != 0 {
			break
		}
		port = 0 // lost a race for the port: pick another
	}
	return nil, lastErr
}

// FindBinDir locates the PostgreSQL server binaries: $WEBHOOKDB_PG_BINDIR, `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	has := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "initdb"))
		return err == nil
	}
	if d := os.Getenv("WEBHOOKDB_PG_BINDIR"); d != "" {
		if has(d) {
			return d, nil
		}
		return "", fmt.Errorf("WEBHOOKDB_PG_BINDIR=%s has no initdb: %w", d, ErrBinariesNotFound)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); has(d) {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, d := range matches {
		if has(d) {
			return d, nil
		}
	}
	return "", ErrBinariesNotFound
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// serverCredential returns the credential to run the server binaries with: initdb and postgres refuse root, so as root they run as the postgres system user.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres system user (created by Debian's postgresql package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (c *Cluster) prepareDirs() error {
	if err := c.checkReachable(filepath.Dir(c.Dir)); err != nil {
		return err
	}
	c.SocketDir = filepath.Join(c.Dir, "run")
	// Unix socket paths are limited to 107 bytes; fall back to a short private directory.
	if len(c.SocketDir)+len("/.s.PGSQL.65535") > 100 {
		d, err := os.MkdirTemp("", "whdb-sock-")
		if err != nil {
			return fmt.Errorf("error creating socket dir: %w", err)
		}
		c.SocketDir = d
	}
	for _, d := range []string{c.Dir, c.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("error creating %s: %w", d, err)
		}
		if err := c.chown(d); err != nil {
			return err
		}
	}
	return nil
}

// checkReachable fails clearly when the server's user could not traverse to dir (a checkout under /root, say).
func (c *Cluster) checkReachable(dir string) error {
	if c.cred == nil {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if parent := filepath.Dir(d); parent != d {
					continue
				}
			}
			return fmt.Errorf("error checking %s: %w", d, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		if ok {
			var canEnter bool
			switch {
			case sys.Uid == c.cred.Uid:
				canEnter = mode&0o100 != 0
			case sys.Gid == c.cred.Gid:
				canEnter = mode&0o010 != 0
			default:
				canEnter = mode&0o001 != 0
			}
			if !canEnter {
				return fmt.Errorf("the postgres system user cannot reach %s (%s is %s): make it traversable (chmod o+x %s) or choose a directory elsewhere", c.Dir, d, mode, d)
			}
		}
		if parent := filepath.Dir(d); parent == d {
			return nil
		}
	}
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("error handing %s to the postgres user: %w", path, err)
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "TZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

func (c *Cluster) initdb(ctx context.Context) error {
	c.logger.InfoContext(ctx, "initialising PostgreSQL cluster", slog.String("dir", c.DataDir))
	password := randomHex(16)
	pwFile := filepath.Join(c.Dir, "superuser-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return fmt.Errorf("error writing password file: %w", err)
	}
	if err := c.chown(pwFile); err != nil {
		return err
	}
	_ = os.RemoveAll(c.DataDir) // a half-done initdb from a crash
	out, err := c.command(ctx, "initdb",
		"--pgdata", c.DataDir, "--username", Superuser, "--pwfile", pwFile,
		"--encoding", "UTF8", "--locale", "C.UTF-8",
		"--auth-local", "trust", "--auth-host", "scram-sha-256",
	).CombinedOutput()
	if err != nil {
		return fmt.Errorf("error running initdb: %w: %s", err, out)
	}
	// Only the superuser may use the private socket without a password; everything over TCP needs a scram-sha-256 password.
	hba := "# written by webhookdb\n" +
		"local all " + Superuser + " trust\n" +
		"local replication " + Superuser + " trust\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n" +
		"host replication all 127.0.0.1/32 scram-sha-256\n"
	hbaPath := filepath.Join(c.DataDir, "pg_hba.conf")
	if err := os.WriteFile(hbaPath, []byte(hba), 0o600); err != nil {
		return fmt.Errorf("error writing pg_hba.conf: %w", err)
	}
	if err := c.chown(hbaPath); err != nil {
		return err
	}
	conf, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("error opening postgresql.conf: %w", err)
	}
	defer conf.Close()
	if _, err := conf.WriteString("\ninclude_if_exists = 'webhookdb.conf'\n"); err != nil {
		return fmt.Errorf("error writing postgresql.conf: %w", err)
	}
	return nil
}

func (c *Cluster) writeSettings(cfg Config) error {
	settings := map[string]string{
		"listen_addresses":        "'127.0.0.1'",
		"port":                    strconv.Itoa(c.Port),
		"unix_socket_directories": quoteConf(c.SocketDir),
		"wal_level":               "logical",
		"max_replication_slots":   "64",
		"max_wal_senders":         "64",
		"max_connections":         strconv.Itoa(cfg.MaxConnections),
		"password_encryption":     "'scram-sha-256'",
		"fsync":                   "on",
		"synchronous_commit":      "on",
		"timezone":                "'UTC'",
		"log_timezone":            "'UTC'",
		"log_min_messages":        "warning",
		"log_line_prefix":         "'%m [%p] %q%u@%d '",
	}
	for k, v := range cfg.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by webhookdb on every start\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	path := filepath.Join(c.DataDir, "webhookdb.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("error writing webhookdb.conf: %w", err)
	}
	return c.chown(path)
}

func (c *Cluster) start(ctx context.Context, cfg Config) error {
	if err := c.writeSettings(cfg); err != nil {
		return err
	}
	logFile := filepath.Join(c.Dir, "postgres.log")
	if f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
		f.Close()
		_ = c.chown(logFile)
	}
	out, err := c.command(ctx, "pg_ctl", "start", "--pgdata", c.DataDir, "--log", logFile, "--wait", "--timeout", "60", "--silent").CombinedOutput()
	if err != nil {
		return fmt.Errorf("error starting PostgreSQL on port %d: %w: %s%s", c.Port, err, out, tail(logFile, 20))
	}
	if err := writeOwner(c.Dir); err != nil {
		return err
	}
	c.logger.DebugContext(ctx, "PostgreSQL started", slog.Int("port", c.Port), slog.String("dir", c.DataDir))
	return nil
}

// Stop shuts the server down with a fast shutdown (open sessions are rolled back, the data is kept).
func (c *Cluster) Stop(ctx context.Context) error {
	out, err := c.command(ctx, "pg_ctl", "stop", "--pgdata", c.DataDir, "--mode", "fast", "--wait", "--timeout", "60", "--silent").CombinedOutput()
	if err != nil {
		return fmt.Errorf("error stopping PostgreSQL: %w: %s", err, out)
	}
	_ = os.Remove(filepath.Join(c.Dir, ownerFile))
	if c.SocketDir != filepath.Join(c.Dir, "run") {
		_ = os.RemoveAll(c.SocketDir)
	}
	return nil
}

// Kill stops the server at once, as a crash would (for failure tests).
func (c *Cluster) Kill(ctx context.Context) error {
	out, err := c.command(ctx, "pg_ctl", "stop", "--pgdata", c.DataDir, "--mode", "immediate", "--wait", "--silent").CombinedOutput()
	if err != nil {
		return fmt.Errorf("error killing PostgreSQL: %w: %s", err, out)
	}
	return nil
}

// Restart starts a stopped cluster again on the same port.
func (c *Cluster) Restart(ctx context.Context) error {
	return c.start(ctx, Config{}.WithDefaults())
}

func (c *Cluster) stopStale(ctx context.Context) {
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); err != nil {
		return
	}
	out, err := c.command(ctx, "pg_ctl", "status", "--pgdata", c.DataDir).CombinedOutput()
	if err != nil {
		return // not running; postgres itself clears a stale pid file
	}
	c.logger.WarnContext(ctx, "stopping a PostgreSQL server left running by an earlier run", slog.String("status", strings.TrimSpace(string(out))))
	_, _ = c.command(ctx, "pg_ctl", "stop", "--pgdata", c.DataDir, "--mode", "fast", "--wait", "--silent").CombinedOutput()
}

func (c *Cluster) previousPort() int {
	b, err := os.ReadFile(filepath.Join(c.Dir, "port"))
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

// Password is the superuser's password (for TCP connections).
func (c *Cluster) Password() string { return c.password }

// URL is a TCP connection URL for the superuser to database db.
func (c *Cluster) URL(db string) string {
	return c.URLFor(Superuser, c.password, db)
}

// URLFor is a TCP connection URL for user/password to database db.
func (c *Cluster) URLFor(username, password, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(username, password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// SocketURL connects as the superuser over the private socket (trust, no password).
func (c *Cluster) SocketURL(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.SocketDir, c.Port, Superuser, db)
}

// Connect opens a superuser connection to database db over the private socket.
func (c *Cluster) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, c.SocketURL(db))
	if err != nil {
		return nil, fmt.Errorf("error connecting to %s: %w", db, err)
	}
	return conn, nil
}

// BinDir is the directory of the server binaries in use (pgbench, pg_dump... live there too).
func (c *Cluster) BinDir() string { return c.binDir }

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("error finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "\nserver log:\n" + strings.Join(all, "\n")
}

// waitGone is used by reaping: give a stopped server a moment to release its port.
func waitGone(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WarmWAL leaves about segments recycled WAL segments ahead of the insert position, as a server in service
// has them. A new cluster creates each 16 MB segment when it first needs it, and the backend that needs it
// zero-fills it (wal_init_zero) while its commit and every commit behind it wait: 100 to 200 ms stalls that a
// benchmark on a new cluster would count against whatever it measures. Each pg_switch_wal here creates one
// segment; the checkpoint then recycles them, which it does only while they stay under min_wal_size, so the
// cluster needs min_wal_size of at least segments * 16MB.
func (c *Cluster) WarmWAL(ctx context.Context, segments int) error {
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for range segments {
		// A switch needs WAL written since the last one: a non-transactional logical message is the least.
		if _, err := conn.Exec(ctx, `SELECT pg_logical_emit_message(false, 'webhookdb_warm_wal', ''), pg_switch_wal()`); err != nil {
			return fmt.Errorf("error switching WAL segments: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
		return fmt.Errorf("error recycling WAL segments: %w", err)
	}
	return nil
}
