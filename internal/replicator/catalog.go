package replicator

// Column constructors keep the catalog files short and declarative. A column reads the resource field of its
// own name unless .at says otherwise.

func col(name, typ string) Column { return Column{Name: name, Type: typ, Path: name} }

func text(name string) Column      { return col(name, TypeText) }
func bigint(name string) Column    { return col(name, TypeBigint) }
func integer(name string) Column   { return col(name, TypeInteger) }
func numeric(name string) Column   { return col(name, TypeNumeric) }
func boolean(name string) Column   { return col(name, TypeBoolean) }
func jsonb(name string) Column     { return col(name, TypeJSONB) }
func textArray(name string) Column { return col(name, TypeTextArray) }

// isoTime is a timestamptz read from an ISO 8601 string.
func isoTime(name string) Column { return col(name, TypeTimestamptz) }

// unixTime is a timestamptz read from integer Unix seconds.
func unixTime(name string) Column {
	c := col(name, TypeTimestamptz)
	c.Convert = ConvertUnixSeconds
	return c
}

// receivedAt is the time webhookdb received the request.
func receivedAt(name string) Column {
	return Column{Name: name, Type: TypeTimestamptz, From: FromReceivedAt}
}

// at reads path instead of the column's name, then each fallback in turn.
func (c Column) at(path string, fallbacks ...string) Column {
	c.Path, c.Fallbacks = path, fallbacks
	return c
}

func (c Column) indexed() Column {
	c.Index = true
	return c
}

func (c Column) fromEvent() Column {
	c.From = FromEvent
	return c
}

func key(name, path string, fallbacks ...string) Column {
	return Column{Name: name, Type: TypeText, Path: path, Fallbacks: fallbacks}
}
