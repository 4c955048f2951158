package replicator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Config is the integration configuration of the configurable services (standard_event_v1, json_v1). Paths
// are dot-separated, into the whole body, which is also the stored data.
type Config struct {
	// RemoteKeyPath locates the remote key. Required for json_v1; standard_event_v1 without it keys each row
	// by the delivery's webhook-id (one row per delivery).
	RemoteKeyPath string `json:"remote_key_path"`
	// TimestampPath locates the event's time (ISO 8601, or Unix seconds or milliseconds). With it the policy is
	// newer-wins on that time; without it, data-changed.
	TimestampPath string `json:"timestamp_path,omitempty"`
	// EventTypePath locates the event type, stored in the event_type column and matched by EventTypes.
	EventTypePath string `json:"event_type_path,omitempty"`
	// EventTypes, when set, keeps only events whose type is one of them.
	EventTypes []string `json:"event_types,omitempty"`
}

// Resolve returns the service named name as configured by an integration's JSON config. json_v1 requires a
// config, standard_event_v1 works without one; the others accept only an empty one ({}, null or nothing) and return the catalog entry.
// Errors wrap ErrUnknownService or ErrInvalidConfig.
func Resolve(name string, config json.RawMessage) (*Service, error) {
	base, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("error resolving %q: %w", name, ErrUnknownService)
	}
	var cfg Config
	if err := decodeConfig(config, base.configurable, &cfg); err != nil {
		return nil, fmt.Errorf("error resolving %s: %w: %w", name, ErrInvalidConfig, err)
	}
	if !base.configurable {
		return base, nil
	}
	s, err := configure(base, cfg)
	if err != nil {
		return nil, fmt.Errorf("error resolving %s: %w: %w", name, ErrInvalidConfig, err)
	}
	return s, nil
}

// decodeConfig decodes strictly: unknown fields and trailing data are errors, so typos are not ignored.
func decodeConfig(raw json.RawMessage, configurable bool, cfg *Config) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var err error
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if configurable {
		err = dec.Decode(cfg)
	} else {
		err = dec.Decode(&struct{}{})
	}
	if err != nil {
		return fmt.Errorf("error decoding config: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("error decoding config: trailing data")
	}
	return nil
}

// Column names of the configurable services. Their tables have the same shape whatever the configuration, so
// reconfiguring an integration needs no DDL.
const (
	genericKeyColumn       = "remote_key"
	genericEventTypeColumn = "event_type"
	genericTimeColumn      = "event_timestamp"
)

func configure(base *Service, cfg Config) (*Service, error) {
	// Senders following the Standard Webhooks payload shape name these fields, and every delivery carries a
	// unique webhook-id that keys it when the body has no id of its own; explicit config overrides.
	standard := base.Name == "standard_event_v1"
	if standard {
		if cfg.EventTypePath == "" {
			cfg.EventTypePath = "type"
		}
		if cfg.TimestampPath == "" {
			cfg.TimestampPath = "timestamp"
		}
	}
	if cfg.RemoteKeyPath == "" && !standard {
		return nil, fmt.Errorf(`remote_key_path is required: the dot-separated path of each row's unique key in the body, `+
			`e.g. webhookdb integrations create %s --config '{"remote_key_path":"id"}'`, base.Name)
	}
	for field, p := range map[string]string{"remote_key_path": cfg.RemoteKeyPath, "timestamp_path": cfg.TimestampPath, "event_type_path": cfg.EventTypePath} {
		if p != "" && slices.Contains(strings.Split(p, "."), "") {
			return nil, fmt.Errorf("%s %q has an empty segment", field, p)
		}
	}
	if len(cfg.EventTypes) > 0 && cfg.EventTypePath == "" {
		return nil, errors.New("event_types needs event_type_path")
	}
	if slices.Contains(cfg.EventTypes, "") {
		return nil, errors.New("event_types has an empty type")
	}

	s := *base
	s.RemoteKey.Path = cfg.RemoteKeyPath
	if cfg.RemoteKeyPath == "" {
		s.RemoteKey.From = FromDeliveryID
	}
	s.Columns = slices.Clone(base.Columns)
	for i := range s.Columns {
		switch s.Columns[i].Name {
		case genericEventTypeColumn:
			s.Columns[i].Path = cfg.EventTypePath
		case genericTimeColumn:
			s.Columns[i].Path = cfg.TimestampPath
		}
	}
	s.Events = EventFilter{Path: cfg.EventTypePath, Equals: slices.Clone(cfg.EventTypes)}
	s.Policy = DataChanged
	if cfg.TimestampPath != "" {
		s.Policy = NewerWins
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	s.raw = s.buildRawPlans()
	return &s, nil
}
