package app

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/webhookdb-go/webhookdb/internal/alerts"
	"github.com/webhookdb-go/webhookdb/internal/outgoing"
	"github.com/webhookdb-go/webhookdb/internal/subscriptions"
)

// OutgoingConfig configures what webhookdb sends out (issue 14): webhook subscriptions and alerts.
type OutgoingConfig struct {
	// AllowPrivate lets subscriptions and alert handlers call loopback and private addresses, and plain http
	// (WEBHOOKDB_OUTGOING_ALLOW_PRIVATE): dev and tests only.
	AllowPrivate bool
	// DisableAfter disables a subscription endpoint whose every delivery has failed this long
	// (WEBHOOKDB_SUBSCRIPTION_DISABLE_AFTER); default 120h.
	DisableAfter time.Duration
	// PendingCap is how many pending deliveries an endpoint may have before new ones are recorded as failed
	// (WEBHOOKDB_SUBSCRIPTION_PENDING_CAP); default 10,000.
	PendingCap int
	// Lease is how long a delivery a dispatcher claimed (or was handed) is held from others, renewed while it
	// works: what a crashed serve's deliveries wait before another sends them again, under their message ids
	// (WEBHOOKDB_SUBSCRIPTION_LEASE); default 5m.
	Lease time.Duration
	// SMTP is the mail server of email alert handlers (WEBHOOKDB_SMTP_ADDR, _FROM, _USERNAME, _PASSWORD).
	SMTP alerts.SMTPConfig
	// Now, Schedule and Resolver are for tests: the clock of the retry schedule, the schedule, and how host
	// names resolve.
	Now      func() time.Time
	Schedule []time.Duration
	Resolver outgoing.Resolver
}

// Environment names of OutgoingConfig.
const (
	EnvOutgoingAllowPrivate = "WEBHOOKDB_OUTGOING_ALLOW_PRIVATE"
	EnvDisableAfter         = "WEBHOOKDB_SUBSCRIPTION_DISABLE_AFTER"
	EnvPendingCap           = "WEBHOOKDB_SUBSCRIPTION_PENDING_CAP"
	EnvSubscriptionLease    = "WEBHOOKDB_SUBSCRIPTION_LEASE"
	EnvSMTPAddr             = "WEBHOOKDB_SMTP_ADDR"
	EnvSMTPFrom             = "WEBHOOKDB_SMTP_FROM"
	EnvSMTPUsername         = "WEBHOOKDB_SMTP_USERNAME"
	EnvSMTPPassword         = "WEBHOOKDB_SMTP_PASSWORD"
)

func (c *Config) bindOutgoingFlags(fs *pflag.FlagSet) {
	o := &c.Outgoing
	fs.BoolVar(&o.AllowPrivate, "outgoing-allow-private", Env(EnvOutgoingAllowPrivate) == "true" || Env(EnvOutgoingAllowPrivate) == "1",
		"let subscriptions and alert handlers call loopback and private addresses and plain http: dev and tests only ("+EnvOutgoingAllowPrivate+")")
	fs.DurationVar(&o.DisableAfter, "subscription-disable-after", c.envDuration(EnvDisableAfter), "disable a subscription endpoint whose every delivery failed this long; default 120h ("+EnvDisableAfter+")")
	fs.IntVar(&o.PendingCap, "subscription-pending-cap", int(c.envInt(EnvPendingCap)), "pending deliveries per endpoint; past it new ones are recorded as failed; default 10000 ("+EnvPendingCap+")")
	fs.DurationVar(&o.Lease, "subscription-lease", c.envDuration(EnvSubscriptionLease), "how long a claimed delivery is held from other dispatchers (renewed while sending): what a crashed serve's deliveries wait before they are sent again; default 5m ("+EnvSubscriptionLease+")")
	fs.StringVar(&o.SMTP.Addr, "smtp-addr", Env(EnvSMTPAddr), "host:port of the SMTP server for email alerts ("+EnvSMTPAddr+")")
	fs.StringVar(&o.SMTP.From, "smtp-from", Env(EnvSMTPFrom), "sender address of email alerts; default alerts@<smtp host> ("+EnvSMTPFrom+")")
	fs.StringVar(&o.SMTP.Username, "smtp-username", Env(EnvSMTPUsername), "SMTP login ("+EnvSMTPUsername+")")
	o.SMTP.Password = Env(EnvSMTPPassword) // environment only: a flag would show in ps
}

// outgoingServices builds the subscriptions and alerts services of a process (issue 14): the API manages
// them, the fanout records and relays notifications, and maintenance delivers and alerts.
func (a *App) outgoingServices() (*subscriptions.Service, *alerts.Service, error) {
	o := a.cfg.Outgoing
	client := outgoing.NewClient(outgoing.Config{AllowPrivate: o.AllowPrivate, Resolver: o.Resolver})
	al, err := alerts.New(alerts.Config{Pool: a.pool, Box: a.box, Client: client, SMTP: o.SMTP, Now: o.Now, Logger: a.logger})
	if err != nil {
		return nil, nil, err
	}
	subs, err := subscriptions.New(subscriptions.Config{
		Pool: a.pool, Box: a.box, Client: client, Now: o.Now, Schedule: o.Schedule,
		DisableAfter: o.DisableAfter, PendingCap: o.PendingCap, Lease: o.Lease, Alerts: al, Logger: a.logger, Registerer: a.registry,
		NoticeWait: 5 * time.Second, // a change that reaches the fanout after create returns is notified
	})
	if err != nil {
		return nil, nil, err
	}
	return subs, al, nil
}

// credentialAlerts tells orgs about read-only credentials that could not be renewed.
type credentialAlerts struct{ alerts *alerts.Service }

func (c credentialAlerts) RenewalFailed(ctx context.Context, orgID int64, username string, err error) {
	_ = c.alerts.CredentialRenewalFailed(ctx, orgID, username, err)
}
