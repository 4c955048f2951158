package replicator

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// A body read in place used to be scanned several times: validated (gjson.ValidBytes), its root object
// iterated for the planned members, the resource's parents iterated to reach it, the resource iterated for
// its members. A scanPlan does all of that in one validating pass, recording where the planned values lie;
// most of the fanout's CPU per row went to those passes. Anything the pass does not expect (an escaped key on
// the way, deep nesting) declines, and the body takes the gjson path or the decoded one instead, which give
// the same rows (FuzzRawAndTree holds the three together).

// scanPlan is a service's single pass: the event's planned members, the path down to the resource, and the
// resource's planned members.
type scanPlan struct {
	root      *scanNode
	spans     int // captured values: the event's slots, then the resource, then the resource's slots
	eventN    int // event slots are [0, eventN)
	resource  int // the resource's own span; -1 when the resource is the event
	resSlot0  int // the resource's slots start here
	resourceN int
}

// scanNode is an object on the way: its members of interest.
type scanNode struct {
	keys map[string]scanEdge
}

// scanEdge is a member of interest: the span it fills (-1 none) and, when the pass descends into it, the
// node of its members and the spans that node's subtree fills (cleared on a duplicate member, as a decoder
// keeps only the last).
type scanEdge struct {
	slot       int
	next       *scanNode
	subFrom    int
	subTo      int
	descending bool
}

// buildScanPlan returns nil when the resource's path cannot be followed by object members alone (an array
// index): such services keep the gjson path.
func buildScanPlan(s *Service, plans *rawPlans) *scanPlan {
	p := &scanPlan{root: &scanNode{keys: map[string]scanEdge{}}, resource: -1}
	p.eventN = len(plans.event.slots)
	for k, i := range plans.event.slots {
		p.root.keys[k] = scanEdge{slot: i}
	}
	p.spans = p.eventN
	if s.Resource == "" {
		return p
	}
	segs := strings.Split(s.Resource, ".")
	for _, seg := range segs {
		if _, err := strconv.Atoi(seg); err == nil || seg == "" {
			return nil
		}
	}
	p.resource = p.spans
	p.resSlot0 = p.resource + 1
	p.resourceN = len(plans.resource.slots)
	p.spans = p.resSlot0 + p.resourceN
	resNode := &scanNode{keys: map[string]scanEdge{}}
	for k, i := range plans.resource.slots {
		resNode.keys[k] = scanEdge{slot: p.resSlot0 + i}
	}
	// Down from the root: every object on the way, the resource's own member last. A duplicate member on
	// the way clears what its earlier namesake filled below it.
	node := p.root
	for i, seg := range segs {
		e, ok := node.keys[seg]
		if !ok {
			e = scanEdge{slot: -1}
		}
		e.descending, e.subFrom, e.subTo = true, p.resSlot0, p.spans
		if i < len(segs)-1 {
			e.next = &scanNode{keys: map[string]scanEdge{}}
			e.subFrom = p.resource
		} else {
			e.next = resNode
			if e.slot >= 0 {
				p.resource = e.slot // a one-segment resource: the event plan has its root member already
			} else {
				e.slot = p.resource
			}
		}
		node.keys[seg] = e
		node = e.next
	}
	return p
}

type span struct{ from, to int32 }

// scanned is what the pass found: the event, the resource (found false when it is missing or null) and their
// planned members.
func (p *scanPlan) scan(body string, plans *rawPlans) (event, resource rawDoc, found, ok bool) {
	if len(body) > 1<<30 {
		return rawDoc{}, rawDoc{}, false, false
	}
	spans := make([]span, p.spans)
	sc := scanner{s: body, spans: spans}
	sc.ws()
	from := sc.i
	if !sc.value(p.root, 0) {
		return rawDoc{}, rawDoc{}, false, false
	}
	to := sc.i
	sc.ws()
	if sc.i != len(body) {
		return rawDoc{}, rawDoc{}, false, false
	}
	result := func(sp span) gjson.Result {
		if sp.to == 0 {
			return gjson.Result{}
		}
		return gjson.Parse(body[sp.from:sp.to])
	}
	event = rawDoc{v: gjson.Parse(body[from:to]), plan: plans.event}
	if event.v.IsObject() && p.eventN > 0 {
		event.top = make([]gjson.Result, p.eventN)
		for i := range event.top {
			event.top[i] = result(spans[i])
		}
	}
	if p.resource < 0 {
		return event, event, true, true
	}
	r := result(spans[p.resource])
	if !r.Exists() || r.Type == gjson.Null {
		return event, rawDoc{}, false, true
	}
	resource = rawDoc{v: r, plan: plans.resource}
	if r.IsObject() && p.resourceN > 0 {
		resource.top = make([]gjson.Result, p.resourceN)
		for i := range resource.top {
			resource.top[i] = result(spans[p.resSlot0+i])
		}
	}
	return event, resource, true, true
}

// scanner validates JSON as RFC 8259 has it (UTF-8 is checked before) and records the planned spans.
type scanner struct {
	s     string
	i     int
	spans []span
}

// maxScanDepth bounds recursion; deeper bodies take another path.
const maxScanDepth = 512

func (sc *scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// value scans one value; node, when not nil, lists the members of interest should it be an object.
func (sc *scanner) value(node *scanNode, depth int) bool {
	if sc.i >= len(sc.s) || depth > maxScanDepth {
		return false
	}
	switch c := sc.s[sc.i]; {
	case c == '{':
		return sc.object(node, depth)
	case c == '[':
		return sc.array(depth)
	case c == '"':
		_, ok := sc.str()
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		return sc.number()
	case c == 't':
		return sc.literal("true")
	case c == 'f':
		return sc.literal("false")
	case c == 'n':
		return sc.literal("null")
	}
	return false
}

func (sc *scanner) object(node *scanNode, depth int) bool {
	sc.i++ // {
	sc.ws()
	if sc.i < len(sc.s) && sc.s[sc.i] == '}' {
		sc.i++
		return true
	}
	for {
		if sc.i >= len(sc.s) || sc.s[sc.i] != '"' {
			return false
		}
		key, ok := sc.str()
		if !ok {
			return false
		}
		sc.ws()
		if sc.i >= len(sc.s) || sc.s[sc.i] != ':' {
			return false
		}
		sc.i++
		sc.ws()
		var edge scanEdge
		interesting := false
		if node != nil {
			if strings.IndexByte(key, '\\') >= 0 {
				return false // an escaped key where members are looked up: compare it decoded, elsewhere
			}
			edge, interesting = node.keys[key[1:len(key)-1]]
		}
		from := sc.i
		if interesting && edge.descending {
			clear(sc.spans[edge.subFrom:edge.subTo])
			if !sc.value(edge.next, depth+1) {
				return false
			}
		} else if !sc.value(nil, depth+1) {
			return false
		}
		if interesting && edge.slot >= 0 {
			sc.spans[edge.slot] = span{int32(from), int32(sc.i)}
		}
		if more, ok := sc.more('}'); !ok || !more {
			return ok
		}
	}
}

func (sc *scanner) array(depth int) bool {
	sc.i++ // [
	sc.ws()
	if sc.i < len(sc.s) && sc.s[sc.i] == ']' {
		sc.i++
		return true
	}
	for {
		if !sc.value(nil, depth+1) {
			return false
		}
		if more, ok := sc.more(']'); !ok || !more {
			return ok
		}
	}
}

// more reads what follows a member or an element: true after a comma, false after closer; ok is false on
// anything else.
func (sc *scanner) more(closer byte) (more, ok bool) {
	sc.ws()
	if sc.i >= len(sc.s) {
		return false, false
	}
	switch sc.s[sc.i] {
	case ',':
		sc.i++
		sc.ws()
		return true, true
	case closer:
		sc.i++
		return false, true
	}
	return false, false
}

// str scans a string and returns it with its quotes.
func (sc *scanner) str() (string, bool) {
	from := sc.i
	sc.i++ // "
	// Most strings hold no escape: find the closing quote with IndexByte (vectorised) and check what it passed
	// over; otherwise step byte by byte.
	if end := strings.IndexByte(sc.s[sc.i:], '"'); end >= 0 && plainString(sc.s[sc.i:sc.i+end]) {
		sc.i += end + 1
		return sc.s[from:sc.i], true
	}
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			return sc.s[from:sc.i], true
		case c == '\\':
			if sc.i+1 >= len(sc.s) {
				return "", false
			}
			switch sc.s[sc.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				sc.i += 2
			case 'u':
				if sc.i+6 > len(sc.s) {
					return "", false
				}
				for _, h := range []byte(sc.s[sc.i+2 : sc.i+6]) {
					if !isHex(h) {
						return "", false
					}
				}
				sc.i += 6
			default:
				return "", false
			}
		case c < 0x20:
			return "", false
		default:
			sc.i++
		}
	}
	return "", false
}

// plainString reports whether s holds neither a backslash nor a control character.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '\\' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (sc *scanner) number() bool {
	if sc.s[sc.i] == '-' {
		sc.i++
	}
	if sc.i >= len(sc.s) {
		return false
	}
	switch c := sc.s[sc.i]; {
	case c == '0':
		sc.i++
	case c >= '1' && c <= '9':
		sc.digits()
	default:
		return false
	}
	if sc.i < len(sc.s) && sc.s[sc.i] == '.' {
		sc.i++
		if sc.digits() == 0 {
			return false
		}
	}
	if sc.i < len(sc.s) && (sc.s[sc.i] == 'e' || sc.s[sc.i] == 'E') {
		sc.i++
		if sc.i < len(sc.s) && (sc.s[sc.i] == '+' || sc.s[sc.i] == '-') {
			sc.i++
		}
		if sc.digits() == 0 {
			return false
		}
	}
	return true
}

func (sc *scanner) digits() int {
	from := sc.i
	for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
		sc.i++
	}
	return sc.i - from
}

func (sc *scanner) literal(word string) bool {
	if !strings.HasPrefix(sc.s[sc.i:], word) {
		return false
	}
	sc.i += len(word)
	return true
}
