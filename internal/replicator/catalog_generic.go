package replicator

// The generic services take any JSON sender. Their columns are fixed and their paths come from the
// integration's Config (see Resolve), so the table never changes shape when the configuration does.

func genericService(name, description, verifier string) *Service {
	return &Service{
		Name:        name,
		Description: description,
		Verifier:    verifier,
		RemoteKey:   key(genericKeyColumn, ""),
		Columns: []Column{
			text(genericEventTypeColumn).at("").indexed(),
			Column{Name: genericTimeColumn, Type: TypeTimestamptz, Convert: ConvertAutoTime, Index: true},
		},
		TimestampColumn: genericTimeColumn,
		Policy:          DataChanged, // until configured with a timestamp path
		configurable:    true,
	}
}

func genericServices() []*Service {
	return []*Service{
		genericService("json_v1", "Any JSON webhook, keyed by a configured path.", VerifierSecretHeader),
		genericService("standard_event_v1",
			"Standard Webhooks events ({type, timestamp, data}): one row per delivery, keyed by its webhook-id "+
				"unless remote_key_path is configured; type and timestamp are read by default.",
			VerifierStandard),
	}
}
