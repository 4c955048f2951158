package app

import (
	"strings"
	"testing"
	"time"

	"github.com/webhookdb-go/webhookdb/fanout"

	"github.com/spf13/pflag"
)

func bind(t *testing.T, groups FlagGroup, args ...string) Config {
	t.Helper()
	var c Config
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	BindFlags(fs, &c, groups)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return c
}

// The deprecated slot and metrics names still work, with a warning; a deployment that sets old and new
// names to different values refuses to start instead of silently moving to another slot.
func TestDeprecatedAliases(t *testing.T) {
	t.Setenv(EnvSlot, "")
	t.Setenv("WEBHOOKDB_FANOUT_SLOT", "old_slot")
	t.Setenv("WEBHOOKDB_FANOUT_METRICS_LISTEN", "127.0.0.1:9100")
	c := bind(t, FlagsCore|FlagsMetrics)
	if c.Slot != "old_slot" || c.MetricsListen != "127.0.0.1:9100" {
		t.Fatalf("aliases not read: slot %q, metrics %q", c.Slot, c.MetricsListen)
	}
	if len(c.deprecated) != 2 || !strings.Contains(strings.Join(c.deprecated, "\n"), "WEBHOOKDB_FANOUT_SLOT is deprecated: use WEBHOOKDB_SLOT_NAME") {
		t.Fatalf("deprecation notes: %q", c.deprecated)
	}

	t.Setenv(EnvSlot, "old_slot")
	if c := bind(t, FlagsCore); len(c.conflicts) != 0 || c.Slot != "old_slot" {
		t.Fatalf("the same value under both names is fine: %v", c.conflicts)
	}
	t.Setenv(EnvSlot, "new_slot")
	c = bind(t, FlagsCore)
	c.DatabaseURL, c.Credentials, c.Keyring = "postgres://localhost/x", CredentialsPostgres, "1:x"
	err := c.WithDefaults().validate()
	if err == nil || !strings.Contains(err.Error(), `WEBHOOKDB_SLOT_NAME="new_slot" and the deprecated WEBHOOKDB_FANOUT_SLOT="old_slot" disagree`) {
		t.Fatalf("conflicting slot names: %v", err)
	}
	// A flag still wins over both.
	if c := bind(t, FlagsCore, "--slot", "flag_slot"); c.Slot != "flag_slot" {
		t.Fatalf("flag: %q", c.Slot)
	}
}

func TestMalformedEnvironmentIsAnError(t *testing.T) {
	t.Setenv(EnvRetention, "a week")
	t.Setenv(EnvBodyLimit, "1MB")
	c := bind(t, FlagsAll)
	c.DatabaseURL, c.Credentials, c.Keyring = "postgres://localhost/x", CredentialsPostgres, "1:x"
	err := c.WithDefaults().validate()
	if err == nil || !strings.Contains(err.Error(), `WEBHOOKDB_RETENTION="a week" is not a duration`) || !strings.Contains(err.Error(), `WEBHOOKDB_BODY_LIMIT="1MB" is not a whole number`) {
		t.Fatalf("malformed values: %v", err)
	}
}

func TestRolesDecideWhatIsRequired(t *testing.T) {
	base := Config{DatabaseURL: "postgres://localhost/x", Credentials: CredentialsPostgres, Keyring: "1:x"}
	fanoutOnly := base
	fanoutOnly.Roles = []Role{RoleFanout}
	fanoutOnly.Listen = "not an address" // unused without ingest or the API
	if err := fanoutOnly.WithDefaults().validate(); err != nil {
		t.Fatalf("fanout alone needs no HTTP listener: %v", err)
	}
	if d := fanoutOnly.WithDefaults(); d.Listen != "not an address" || d.servesHTTP() {
		t.Fatalf("fanout alone: %+v", d)
	}
	serve := base
	serve.Listen = "not an address"
	if err := serve.WithDefaults().validate(); err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("serve with a bad listen address: %v", err)
	}
	bad := base
	bad.Roles = []Role{"web"}
	if err := bad.WithDefaults().validate(); err == nil || !strings.Contains(err.Error(), `unknown role "web"`) {
		t.Fatalf("unknown role: %v", err)
	}
	vault := Config{DatabaseURL: "postgres://localhost/x"}
	if err := vault.WithDefaults().validate(); err == nil || !strings.Contains(err.Error(), "credentials mode vault needs VAULT_ADDR") {
		t.Fatalf("vault credentials without Vault: %v", err)
	}
}

func TestIngestBudgetsAndTrustedProxies(t *testing.T) {
	t.Setenv(EnvIngestMemory, "268435456")
	t.Setenv(EnvIngestMemoryPerOrg, "16777216")
	t.Setenv(EnvIngestIdleTimeout, "5s")
	t.Setenv(EnvTrustedProxies, "10.0.0.0/8, 192.0.2.1,::1")
	c := bind(t, FlagsAll)
	c.DatabaseURL, c.Credentials, c.Keyring = "postgres://localhost/x", CredentialsPostgres, "1:x"
	if err := c.WithDefaults().validate(); err != nil {
		t.Fatal(err)
	}
	proxies, _ := c.trustedProxies()
	if c.IngestMemory != 256<<20 || c.IngestMemoryPerOrg != 16<<20 || c.IngestIdleTimeout.String() != "5s" || len(proxies) != 3 || proxies[1].String() != "192.0.2.1/32" {
		t.Fatalf("ingest settings: %d %d %s %v", c.IngestMemory, c.IngestMemoryPerOrg, c.IngestIdleTimeout, proxies)
	}
	c.TrustedProxies = "10.0.0.0/8,not-a-network"
	if err := c.WithDefaults().validate(); err == nil || !strings.Contains(err.Error(), `trusted proxy "not-a-network"`) {
		t.Fatalf("bad trusted proxy: %v", err)
	}
}

// --key-rotation-period: 30 days by default, 0 (flag or variable) disables.
func TestKeyRotationPeriod(t *testing.T) {
	t.Setenv(EnvKeyRotationPeriod, "")
	if c := bind(t, FlagsAll).WithDefaults(); c.KeyRotationPeriod != DefaultKeyRotationPeriod {
		t.Fatalf("default: %v", c.KeyRotationPeriod)
	}
	if c := bind(t, FlagsAll, "--key-rotation-period=0").WithDefaults(); c.KeyRotationPeriod > 0 {
		t.Fatalf("--key-rotation-period=0 does not disable: %v", c.KeyRotationPeriod)
	}
	if c := bind(t, FlagsAll, "--key-rotation-period=48h").WithDefaults(); c.KeyRotationPeriod != 48*time.Hour {
		t.Fatalf("48h: %v", c.KeyRotationPeriod)
	}
	t.Setenv(EnvKeyRotationPeriod, "0")
	if c := bind(t, FlagsAll).WithDefaults(); c.KeyRotationPeriod > 0 {
		t.Fatalf("%s=0 does not disable: %v", EnvKeyRotationPeriod, c.KeyRotationPeriod)
	}
}

// Vault needs a token or an AppRole (both ids), not both.
func TestVaultAuthValidation(t *testing.T) {
	base := Config{DatabaseURL: "postgres://localhost/x", VaultAddr: "http://127.0.0.1:8200", Roles: []Role{RoleMaintenance}}
	cases := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) {}, "neither VAULT_TOKEN"},
		{func(c *Config) { c.VaultRoleID = "r" }, "both the role id and the secret id"},
		{func(c *Config) { c.VaultRoleID, c.VaultSecretID, c.VaultToken = "r", "s", "t" }, "not both"},
		{func(c *Config) { c.VaultRoleIDFile, c.VaultSecretID = "/f", "s" }, ""},
		{func(c *Config) { c.VaultToken = "t" }, ""},
	}
	for i, tc := range cases {
		c := base
		tc.mutate(&c)
		err := c.WithDefaults().validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("case %d: %v, want %q", i, err, tc.want)
		}
	}
}

// Read-only logins leave each server what webhookdb needs there: the fanout's whole cap and the service
// connections, unless the operator says otherwise.
func TestServerReserveCoversTheFanout(t *testing.T) {
	if pct, n := (Config{}).serverReserve(); pct != fanout.DefaultServerConnPercent || n != serviceConnections {
		t.Fatalf("default reserve %d%% + %d, want the fanout's share %d%% + %d", pct, n, fanout.DefaultServerConnPercent, serviceConnections)
	}
	c := Config{}
	c.Fanout.MaxOrgConns = 16
	if pct, n := c.serverReserve(); pct != 0 || n != 16+serviceConnections {
		t.Fatalf("reserve with a cap of 16: %d%% + %d", pct, n)
	}
	c.ServerReservedConnections = -1
	if pct, n := c.serverReserve(); pct != 0 || n != -1 {
		t.Fatalf("an explicit setting wins: %d%% + %d", pct, n)
	}
}
