package replicator

// Intercom wraps the object in a notification envelope; the item's type, not the topic, selects it, as topics
// such as contact.tag.created carry other objects. Intercom times are Unix seconds.

func intercomService(itemType, description string, cols ...Column) *Service {
	return &Service{
		Name:            "intercom_" + itemType + "_v1",
		Description:     description,
		Verifier:        VerifierIntercom,
		Events:          EventFilter{Path: "data.item.type", Equals: []string{itemType}},
		Resource:        "data.item",
		RemoteKey:       key("intercom_id", "id"),
		Columns:         cols,
		TimestampColumn: "updated_at",
		Policy:          NewerWins,
		// The REST API's object is the notification's item, with its own updated_at.
		Bare: &BareObject{Filter: EventFilter{Path: "type", Equals: []string{itemType}}},
	}
}

func intercomServices() []*Service {
	return []*Service{
		intercomService("contact", "Intercom contacts (users and leads).",
			unixTime("created_at"),
			text("email").indexed(),
			text("external_id").indexed(),
			unixTime("last_seen_at"),
			text("name"),
			text("phone"),
			text("role"),
			unixTime("updated_at"),
			text("workspace_id"),
		),
		intercomService("conversation", "Intercom conversations.",
			text("admin_assignee_id").indexed(),
			unixTime("created_at"),
			boolean("open"),
			text("priority"),
			boolean("read"),
			unixTime("snoozed_until"),
			text("state"),
			text("team_assignee_id"),
			text("title"),
			unixTime("updated_at"),
			unixTime("waiting_since"),
		),
	}
}
