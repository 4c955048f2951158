package replicator

// Twilio status callbacks are form posts without any update time, and arrive out of order as often as not.
// date_updated is therefore the time webhookdb received the callback, compared newer-wins: a replay of an old
// callback (replays keep the original receive time) cannot overwrite a newer status, which data-changed would.

func rfc1123Time(name string) Column {
	c := col(name, TypeTimestamptz)
	c.Convert = ConvertRFC1123
	return c
}

func twilioServices() []*Service {
	return []*Service{{
		Name:        "twilio_sms_v1",
		Description: "Twilio SMS and MMS messages, from message status callbacks and incoming message webhooks.",
		Verifier:    VerifierTwilio,
		Format:      FormatForm,
		RemoteKey:   key("twilio_id", "MessageSid", "SmsSid"),
		Columns: []Column{
			text("account_sid").at("AccountSid").indexed(),
			text("body").at("Body"),
			receivedAt("date_updated"),
			integer("error_code").at("ErrorCode"),
			text("from").at("From").indexed(),
			text("messaging_service_sid").at("MessagingServiceSid"),
			integer("num_media").at("NumMedia"),
			integer("num_segments").at("NumSegments"),
			text("status").at("MessageStatus", "SmsStatus"),
			text("to").at("To").indexed(),
		},
		TimestampColumn: "date_updated",
		Policy:          NewerWins,
		// The REST API's Message (JSON, snake_case) lands in the callback's row; its version is Twilio's own
		// date_updated.
		Bare: &BareObject{
			RemoteKey: &Column{Type: TypeText, Path: "sid"},
			Columns: []Column{
				text("account_sid"),
				text("body"),
				rfc1123Time("date_updated"),
				integer("error_code"),
				text("from"),
				text("messaging_service_sid"),
				integer("num_media"),
				integer("num_segments"),
				text("status"),
				text("to"),
			},
		},
	}}
}
