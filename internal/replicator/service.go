package replicator

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

var (
	// ErrMalformed marks a webhook that can never be turned into rows (bad JSON or form body, missing remote
	// key, missing resource). It is permanent: retrying the same body cannot succeed.
	ErrMalformed = errors.New("malformed webhook")

	// ErrUnknownService is returned by Resolve for a name that is not in the catalog.
	ErrUnknownService = errors.New("unknown service")

	// ErrInvalidConfig is returned by Resolve for a configuration the service does not accept.
	ErrInvalidConfig = errors.New("invalid service configuration")

	// ErrNotConfigured is returned by Extract on a configurable service that did not go through Resolve.
	ErrNotConfigured = errors.New("service needs a configuration")
)

// Column types a Column may have: the Postgres type of the column, which also fixes the Go type of its
// extracted value.
const (
	TypeText        = "text"        // string
	TypeBigint      = "bigint"      // int64
	TypeInteger     = "integer"     // int32
	TypeNumeric     = "numeric"     // pgtype.Numeric
	TypeBoolean     = "boolean"     // bool
	TypeTimestamptz = "timestamptz" // time.Time, UTC, rounded to microseconds
	TypeJSONB       = "jsonb"       // json.RawMessage
	TypeTextArray   = "text[]"      // []string
)

// Signature schemes a service can default to (the verifier package implements them).
const (
	VerifierStripe       = "stripe"
	VerifierGitHub       = "github"
	VerifierShopify      = "shopify"
	VerifierTwilio       = "twilio"
	VerifierStandard     = "standard"
	VerifierIntercom     = "intercom"
	VerifierHMAC         = "hmac"
	VerifierSecretHeader = "secret_header"
	VerifierBasicAuth    = "basic_auth"
	VerifierNone         = "none"
)

// BodyFormat is how a service's webhook bodies are encoded.
type BodyFormat int

const (
	// FormatJSON bodies are a JSON document.
	FormatJSON BodyFormat = iota
	// FormatForm bodies are application/x-www-form-urlencoded. The fields become a JSON object: a field sent
	// once maps to a string, a field sent several times to an array of strings.
	FormatForm
)

// ConflictPolicy decides whether an incoming row replaces the stored row with the same remote key.
type ConflictPolicy int

const (
	// NewerWins replaces the stored row only if the incoming TimestampColumn is strictly greater. A stored
	// NULL timestamp counts as older than anything; an incoming NULL never replaces a stored timestamp.
	NewerWins ConflictPolicy = iota + 1
	// DataChanged replaces the stored row whenever data differs (jsonb equality, so key order is irrelevant).
	DataChanged
	// Immutable never replaces a stored row.
	Immutable
)

func (p ConflictPolicy) String() string {
	switch p {
	case NewerWins:
		return "newer_wins"
	case DataChanged:
		return "data_changed"
	case Immutable:
		return "immutable"
	}
	return fmt.Sprintf("ConflictPolicy(%d)", int(p))
}

// Source is where a column's value comes from.
type Source int

const (
	// FromResource reads Path inside the resource (the default). Only these columns can be filled from data
	// when they are added to an existing table.
	FromResource Source = iota
	// FromEvent reads Path inside the whole event body (the envelope), as Stripe's updated = event created.
	FromEvent
	// FromHeader reads the request header named by Header.
	FromHeader
	// FromReceivedAt takes the time webhookdb received the request (for senders without an update time).
	FromReceivedAt
	// FromDeliveryID takes the sender's id of the delivery (Webhook.DeliveryID), for events that have no id of
	// their own in the body.
	FromDeliveryID
)

// Converter says how a timestamptz column parses its source value. Other types take no converter: numbers,
// numeric strings and booleans are coerced by Type alone.
type Converter int

const (
	// ConvertNone parses timestamptz values as ISO 8601 / RFC 3339 (a value without offset is UTC).
	ConvertNone Converter = iota
	// ConvertUnixSeconds reads an integer count of seconds since the Unix epoch.
	ConvertUnixSeconds
	// ConvertUnixMillis reads an integer count of milliseconds since the Unix epoch.
	ConvertUnixMillis
	// ConvertRFC1123 reads "Mon, 16 Aug 2010 03:45:01 +0000" (Twilio's REST dates).
	ConvertRFC1123
	// ConvertAutoTime reads an ISO 8601 string, or a number: seconds up to 11 digits, milliseconds above.
	ConvertAutoTime
)

// EventFilter selects the events that carry a service's resource. The event value is read from Header when
// set, else from Path in the event body. An empty filter (no Equals, no Prefix) matches every event; otherwise
// the value must equal one of Equals or start with one of Prefix. An event without the value never matches.
type EventFilter struct {
	Header string
	Path   string
	Equals []string
	Prefix []string
}

// Column is one typed column of a replicated table.
type Column struct {
	Name string
	Type string
	// Path is a dot-separated path; a segment that is an integer indexes an array.
	Path string
	// Fallbacks are paths tried in order when Path yields no value (providers that renamed a field).
	Fallbacks []string
	// Concat are more paths whose values are appended with ':', all required (composite remote keys only).
	Concat  []string
	From    Source
	Header  string
	Convert Converter
	Index   bool
}

// Service is one replicated resource of one provider. It is a plain value: the catalog is data, not code.
// Catalog entries are shared; treat them as read-only.
type Service struct {
	// Name is <vendor>_<resource>_v<N> (json_v1 has no resource), and the default table name.
	Name        string
	Description string
	// Verifier is the default signature scheme of an integration of this service.
	Verifier string
	Format   BodyFormat
	Events   EventFilter
	// Resource is the path of the resource in the event; "" is the whole body. An array yields one row per
	// element.
	Resource string
	// RemoteKey is the provider's identifier: a TEXT UNIQUE NOT NULL column.
	RemoteKey Column
	Columns   []Column
	// TimestampColumn names the column NewerWins compares.
	TimestampColumn string
	Policy          ConflictPolicy

	// Bare maps the vendor's bare API object (a backfilled one) to the same row; nil: the service has none.
	Bare *BareObject

	// configurable marks services that need Resolve before Extract.
	configurable bool
	// bare reads bare objects (built from Bare with the catalog).
	bare *Service
	// raw are the root plans for reading JSON bodies in place, built when the service is finished (catalog,
	// Resolve); nil builds them per call.
	raw *rawPlans
}

// Configurable reports whether the service needs an integration configuration (see Resolve).
func (s *Service) Configurable() bool { return s.configurable }

// timestampIndex is the index in Columns of TimestampColumn, or -1.
func (s *Service) timestampIndex() int {
	return slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == s.TimestampColumn })
}

// reservedColumns are the columns every table has besides the service's own.
var reservedColumns = []string{"pk", "data", "row_updated_at"}

var (
	// namePattern is <vendor>_<resource>_v<N>; the resource may be absent when the vendor is the resource
	// (json_v1).
	namePattern   = regexp.MustCompile(`^[a-z]+(_[a-z_]+)?_v[0-9]+$`)
	columnPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// validate checks the invariants the SQL builders rely on. The catalog is checked by tests; Resolve checks
// what it builds.
func (s *Service) validate() error {
	if !namePattern.MatchString(s.Name) {
		return fmt.Errorf("service name %q does not match %s", s.Name, namePattern)
	}
	if s.Policy < NewerWins || s.Policy > Immutable {
		return fmt.Errorf("service %s: no conflict policy", s.Name)
	}
	if s.RemoteKey.Type != TypeText {
		return fmt.Errorf("service %s: remote key must be text", s.Name)
	}
	seen := map[string]bool{}
	for _, r := range reservedColumns {
		seen[r] = true
	}
	for _, c := range s.Columns {
		if len(c.Concat) > 0 {
			return fmt.Errorf("service %s: column %s: concat applies to the remote key only", s.Name, c.Name)
		}
	}
	all := append([]Column{s.RemoteKey}, s.Columns...)
	for _, c := range all {
		if !columnPattern.MatchString(c.Name) {
			return fmt.Errorf("service %s: bad column name %q", s.Name, c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("service %s: duplicate or reserved column %q", s.Name, c.Name)
		}
		seen[c.Name] = true
		if err := c.validate(); err != nil {
			return fmt.Errorf("service %s: column %s: %w", s.Name, c.Name, err)
		}
	}
	if s.Policy == NewerWins {
		i := s.timestampIndex()
		if i < 0 {
			return fmt.Errorf("service %s: newer-wins policy needs a timestamp column", s.Name)
		}
		if s.Columns[i].Type != TypeTimestamptz {
			return fmt.Errorf("service %s: timestamp column %s is not timestamptz", s.Name, s.TimestampColumn)
		}
	}
	if s.Events.Header != "" && s.Events.Path != "" {
		return fmt.Errorf("service %s: event filter has both a header and a path", s.Name)
	}
	return nil
}

func (c Column) validate() error {
	switch c.Type {
	case TypeText, TypeBigint, TypeInteger, TypeNumeric, TypeBoolean, TypeTimestamptz, TypeJSONB, TypeTextArray:
	default:
		return fmt.Errorf("unsupported type %q", c.Type)
	}
	if c.Convert != ConvertNone && c.Type != TypeTimestamptz {
		return errors.New("converters apply to timestamptz columns only")
	}
	if len(c.Concat) > 0 && c.Type != TypeText {
		return errors.New("concat applies to text columns only")
	}
	switch c.From {
	case FromResource, FromEvent:
		if c.Header != "" {
			return errors.New("header set on a column that does not read a header")
		}
	case FromHeader:
		if c.Header == "" || c.Path != "" || len(c.Fallbacks) > 0 || len(c.Concat) > 0 {
			return errors.New("header column needs Header and no paths")
		}
	case FromReceivedAt:
		if c.Type != TypeTimestamptz || c.Path != "" || c.Header != "" {
			return errors.New("received-at column must be a timestamptz without path")
		}
	case FromDeliveryID:
		if c.Type != TypeText || c.Path != "" || c.Header != "" || len(c.Fallbacks) > 0 || len(c.Concat) > 0 {
			return errors.New("delivery-id column must be text without path or header")
		}
	default:
		return fmt.Errorf("unknown source %d", c.From)
	}
	for _, p := range append(append([]string{c.Path}, c.Fallbacks...), c.Concat...) {
		if p != "" && slices.Contains(strings.Split(p, "."), "") {
			return fmt.Errorf("path %q has an empty segment", p)
		}
	}
	return nil
}

// catalog is every service, sorted by name; byName indexes it.
var catalog, byName = buildCatalog(
	stripeServices(),
	githubServices(),
	shopifyServices(),
	twilioServices(),
	postmarkServices(),
	intercomServices(),
	genericServices(),
)

func buildCatalog(groups ...[]*Service) ([]*Service, map[string]*Service) {
	var all []*Service
	m := map[string]*Service{}
	for _, g := range groups {
		for _, s := range g {
			if m[s.Name] != nil {
				panic("replicator: duplicate service " + s.Name)
			}
			s.raw = s.buildRawPlans()
			m[s.Name] = s
			all = append(all, s)
		}
	}
	slices.SortFunc(all, func(a, b *Service) int { return strings.Compare(a.Name, b.Name) })
	buildBare(all)
	return all, m
}

// All returns the catalog sorted by name. The slice is the caller's; the services are shared.
func All() []*Service { return slices.Clone(catalog) }

// Lookup returns the catalog service with the given name. A configurable service returned by Lookup still
// needs Resolve before Extract; its table shape does not depend on the configuration.
func Lookup(name string) (*Service, bool) {
	s, ok := byName[name]
	return s, ok
}
