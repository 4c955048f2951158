package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/webhookdb-go/webhookdb/internal/orgdb"
	"github.com/webhookdb-go/webhookdb/pgroles"
)

var _ orgdb.WriterIssuer = (*Issuer)(nil)

// setupFanout makes sure webhookdb_fanout exists on the server (with every org owner role) and that Vault's
// static role rotates its password every FanoutRotationPeriod. Vault sets a new password when it creates the
// static role, so the password only ever exists in Vault.
func (i *Issuer) setupFanout(ctx context.Context, srv orgdb.Server) error {
	if err := pgroles.EnsureFanoutRole(ctx, srv.AdminURL, ""); err != nil {
		return err
	}
	role := FanoutRoleName(srv.Name)
	existing, err := i.cfg.Client.Logical().ReadWithContext(ctx, i.path("static-roles", role))
	if err != nil {
		return fmt.Errorf("error reading vault static role %s: %w", role, err)
	}
	period := int(i.cfg.FanoutRotationPeriod.Seconds())
	if existing != nil {
		if p, _ := existing.Data["rotation_period"].(interface{ String() string }); p != nil && p.String() == fmt.Sprint(period) {
			return nil
		}
	}
	_, err = i.cfg.Client.Logical().WriteWithContext(ctx, i.path("static-roles", role), map[string]any{
		"db_name":         srv.Name,
		"username":        pgroles.FanoutRole,
		"rotation_period": period,
	})
	if err != nil {
		return fmt.Errorf("error writing vault static role %s: %w", role, err)
	}
	return nil
}

// WriterCredential implements orgdb.WriterIssuer with FanoutCredential.
func (i *Issuer) WriterCredential(ctx context.Context, srv orgdb.Server) (*orgdb.WriterCredential, error) {
	return i.FanoutCredential(ctx, srv.Name)
}

// FanoutCredential returns the fanout's current login on a server (database/static-creds/webhookdb-fanout-
// <server>). Connections opened before a rotation keep working; new ones need the new password.
func (i *Issuer) FanoutCredential(ctx context.Context, serverName string) (*orgdb.WriterCredential, error) {
	s, err := i.cfg.Client.Logical().ReadWithContext(ctx, i.path("static-creds", FanoutRoleName(serverName)))
	if err != nil {
		return nil, fmt.Errorf("error reading the fanout credentials of %s: %w", serverName, err)
	}
	if s == nil {
		return nil, fmt.Errorf("%w: no fanout static role for %s", ErrNotConfigured, serverName)
	}
	username, _ := s.Data["username"].(string)
	password, _ := s.Data["password"].(string)
	if username == "" || password == "" {
		return nil, errors.New("vault returned empty fanout credentials")
	}
	cred := &orgdb.WriterCredential{Username: username, Password: password}
	if n, ok := s.Data["ttl"]; ok {
		if secs, err := parseSeconds(n); err == nil {
			cred.RotatesAt = time.Now().Add(secs)
		}
	}
	return cred, nil
}

// RotateFanout rotates the fanout's password now (database/rotate-role/webhookdb-fanout-<server>).
func (i *Issuer) RotateFanout(ctx context.Context, serverName string) error {
	if _, err := i.cfg.Client.Logical().WriteWithContext(ctx, i.path("rotate-role", FanoutRoleName(serverName)), nil); err != nil {
		return fmt.Errorf("error rotating the fanout credentials of %s: %w", serverName, err)
	}
	return nil
}

func parseSeconds(v any) (time.Duration, error) {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		s, err := n.Int64()
		return time.Duration(s) * time.Second, err
	case float64:
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("not a number: %v", v)
}
