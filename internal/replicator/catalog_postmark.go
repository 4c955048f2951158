package replicator

// Postmark outbound webhooks are events about a message, not the message: one row per message and record type
// (Delivery, Bounce, Open, ...) holds the latest event of that type, so opens and clicks do not grow without
// bound while each kind of outcome stays visible. Each record type names its time differently.

func postmarkServices() []*Service {
	eventKey := key("event_key", "MessageID")
	eventKey.Concat = []string{"RecordType"}
	return []*Service{
		{
			Name:        "postmark_inbound_message_v1",
			Description: "Postmark inbound emails. An inbound email never changes.",
			Verifier:    VerifierBasicAuth,
			RemoteKey:   key("postmark_id", "MessageID"),
			Columns: []Column{
				text("from_email").at("From").indexed(),
				text("from_name").at("FromName"),
				text("mailbox_hash").at("MailboxHash"),
				text("message_stream").at("MessageStream"),
				text("original_recipient").at("OriginalRecipient").indexed(),
				receivedAt("received_at"),
				text("subject").at("Subject"),
				text("tag").at("Tag"),
				text("to").at("To"),
			},
			Policy: Immutable,
		},
		{
			Name:        "postmark_outbound_message_event_v1",
			Description: "Postmark outbound message events: the latest event of each record type per message.",
			Verifier:    VerifierBasicAuth,
			Events: EventFilter{Path: "RecordType", Equals: []string{
				"Delivery", "Bounce", "SpamComplaint", "Open", "Click", "SubscriptionChange",
			}},
			RemoteKey: eventKey,
			Columns: []Column{
				text("bounce_type").at("Type"),
				text("message_id").at("MessageID").indexed(),
				text("message_stream").at("MessageStream"),
				isoTime("occurred_at").at("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt"),
				text("recipient").at("Recipient", "Email").indexed(),
				text("record_type").at("RecordType"),
				bigint("server_id").at("ServerID"),
				text("tag").at("Tag"),
			},
			TimestampColumn: "occurred_at",
			Policy:          NewerWins,
		},
	}
}
