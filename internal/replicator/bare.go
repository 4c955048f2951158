package replicator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// BareObject says how a vendor's bare API object (what a backfill fetches from the vendor's list endpoints)
// maps to the same row as the webhook that carries it. A backfilled object has no envelope: no event time, no
// headers; its version is the vendor's own updated-at where the object has one, else the time it was fetched
// (the webhook's ReceivedAt), so a webhook older than the fetch never overwrites it and a newer one does.
type BareObject struct {
	// Filter selects the objects of this resource by a path in the object; empty matches every object.
	Filter EventFilter
	// Resource is the path of the resource in the object; "" is the object itself, an array yields a row per
	// element (Stripe's subscription items inside a subscription).
	Resource string
	// Envelope selects objects that are events in the webhook's own shape (Stripe's /v1/events): they are
	// extracted exactly as a webhook would be. Empty matches none.
	Envelope EventFilter
	// Columns replace the webhook's columns of the same name for bare objects: a value the API object holds
	// elsewhere, or a version that is the fetch time (a FromReceivedAt column).
	Columns []Column
	// RemoteKey, when set, replaces the remote key's paths (the column keeps its name).
	RemoteKey *Column
	// Lowercase names text columns whose API value is the webhook's upper-cased (GraphQL enums: ACTIVE for
	// active). Joined maps text columns to a path holding a list of strings the webhook sends joined with ", "
	// (Shopify's tags). Both apply to objects that are one row (Resource "").
	Lowercase []string
	Joined    map[string]string
}

// bareService is the service that reads bare objects as its webhooks: the same table, the bare mapping's
// filter, resource and columns, JSON bodies.
func (s *Service) bareService() (*Service, error) {
	b := s.Bare
	d := *s
	d.Bare, d.bare, d.raw = nil, nil, nil
	d.Format = FormatJSON
	d.Events = b.Filter
	d.Resource = b.Resource
	if b.RemoteKey != nil {
		k := *b.RemoteKey
		k.Name = s.RemoteKey.Name
		d.RemoteKey = k
	}
	d.Columns = make([]Column, len(s.Columns))
	copy(d.Columns, s.Columns)
	for _, c := range b.Columns {
		i := -1
		for j := range d.Columns {
			if d.Columns[j].Name == c.Name {
				i = j
			}
		}
		if i < 0 {
			return nil, fmt.Errorf("service %s: bare column %s is not a column of the table", s.Name, c.Name)
		}
		if c.Type != d.Columns[i].Type {
			return nil, fmt.Errorf("service %s: bare column %s is %s, the table's is %s", s.Name, c.Name, c.Type, d.Columns[i].Type)
		}
		c.Index = d.Columns[i].Index
		d.Columns[i] = c
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	for _, name := range append(slices.Clone(b.Lowercase), slices.Collect(maps.Keys(b.Joined))...) {
		if i := d.columnIndex(name); i < 0 || d.Columns[i].Type != TypeText || b.Resource != "" {
			return nil, fmt.Errorf("service %s: bare column %s to lowercase or join is not a text column of a one-row object", s.Name, name)
		}
	}
	d.raw = d.buildRawPlans()
	return &d, nil
}

// ReadsBareObjects reports whether the service maps the vendor's bare API objects (a backfill can feed it).
func (s *Service) ReadsBareObjects() bool { return s.bare != nil }

// extractBare turns one backfilled API object into rows; see [BareObject].
func (s *Service) extractBare(w Webhook) ([]Row, error) {
	if s.bare == nil {
		return nil, fmt.Errorf("error extracting %s: %w: the service does not read the vendor's API objects", s.Name, ErrMalformed)
	}
	w.Bare = false
	if len(s.Bare.Envelope.Equals)+len(s.Bare.Envelope.Prefix) > 0 {
		obj, err := parseJSON(w.Body)
		if err != nil {
			return nil, fmt.Errorf("error parsing %s API object: %w: %w", s.Name, ErrMalformed, err)
		}
		if s.Bare.Envelope.matches(nil, treeDoc{obj}) {
			return s.Extract(w)
		}
	}
	rows, err := s.bare.Extract(w)
	if err != nil || len(rows) != 1 || (len(s.Bare.Lowercase) == 0 && len(s.Bare.Joined) == 0) {
		return rows, err
	}
	for _, name := range s.Bare.Lowercase {
		i := s.bare.columnIndex(name)
		if v, ok := rows[0].Values[i].(string); ok {
			rows[0].Values[i] = strings.ToLower(v)
		}
	}
	if len(s.Bare.Joined) > 0 {
		obj, err := parseJSON(w.Body)
		if err != nil {
			return nil, fmt.Errorf("error parsing %s API object: %w: %w", s.Name, ErrMalformed, err)
		}
		for name, path := range s.Bare.Joined {
			list, _ := lookup(obj, path)
			items, ok := list.([]any)
			if !ok {
				continue
			}
			parts := make([]string, 0, len(items))
			for _, it := range items {
				if t, ok := scalarText(it); ok {
					parts = append(parts, strings.ReplaceAll(t, "\x00", ""))
				}
			}
			rows[0].Values[s.bare.columnIndex(name)] = strings.Join(parts, ", ")
		}
	}
	return rows, nil
}

func (s *Service) columnIndex(name string) int {
	return slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == name })
}

// buildBare prepares each catalog service's bare-object reader; a catalog mistake is a panic at start.
func buildBare(all []*Service) {
	for _, s := range all {
		if s.Bare == nil {
			continue
		}
		d, err := s.bareService()
		if err != nil {
			panic("replicator: " + err.Error())
		}
		s.bare = d
	}
}
