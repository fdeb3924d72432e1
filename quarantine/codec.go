package quarantine

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// The matches column holds a JSON array of Match, readable as it is (and
// searchable by rule name from SQL). JSON strings cannot hold invalid
// UTF-8, while rule metadata can: a Match with any invalid UTF-8 in it is
// stored with its strings made valid for reading, plus an "exact" member
// holding every string as bytes (base64), which decoding prefers.

// storedMatch is Match as stored.
type storedMatch struct {
	Match
	Exact *exactMatch `json:"exact,omitempty"`
}

type exactMatch struct {
	Rule      []byte        `json:"rule"`
	Namespace []byte        `json:"namespace"`
	RuleFile  []byte        `json:"rule_file"`
	Tags      [][]byte      `json:"tags"`
	Meta      [][2][]byte   `json:"meta"`
	Strings   []exactString `json:"strings"`
}

type exactString struct {
	ID []byte `json:"id"`
}

// encodeMatch returns the stored form of one match: an element of the
// matches column's array.
func encodeMatch(m Match) ([]byte, error) {
	out := storedMatch{Match: m}
	if !matchValidUTF8(m) {
		v := &out.Match
		v.Rule, v.Namespace, v.RuleFile = valid(m.Rule), valid(m.Namespace), valid(m.RuleFile)
		x := &exactMatch{Rule: []byte(m.Rule), Namespace: []byte(m.Namespace), RuleFile: []byte(m.RuleFile)}
		v.Tags = make([]string, len(m.Tags))
		for j, t := range m.Tags {
			v.Tags[j] = valid(t)
			x.Tags = append(x.Tags, []byte(t))
		}
		if m.Meta != nil {
			v.Meta = make(map[string]string, len(m.Meta))
		}
		for k, val := range m.Meta {
			v.Meta[valid(k)] = valid(val)
			x.Meta = append(x.Meta, [2][]byte{[]byte(k), []byte(val)})
		}
		v.Strings = make([]StringMatch, len(m.Strings))
		for j, s := range m.Strings {
			v.Strings[j] = s
			v.Strings[j].ID = valid(s.ID)
			x.Strings = append(x.Strings, exactString{ID: []byte(s.ID)})
		}
		out.Exact = x
	}
	return json.Marshal(out)
}

// joinJSON makes a JSON array of encoded elements.
func joinJSON(elems [][]byte) []byte {
	n := 2
	for _, e := range elems {
		n += len(e) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, e := range elems {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

func decodeMatches(b []byte) ([]Match, error) {
	var in []storedMatch
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]Match, len(in))
	for i, sm := range in {
		out[i] = sm.Match
		m := &out[i]
		for j := range m.Strings {
			m.Strings[j].Len = max(m.Strings[j].Len, int64(len(m.Strings[j].Data)))
		}
		x := sm.Exact
		if x == nil {
			continue
		}
		m.Rule, m.Namespace, m.RuleFile = string(x.Rule), string(x.Namespace), string(x.RuleFile)
		m.Tags = nil
		for _, t := range x.Tags {
			m.Tags = append(m.Tags, string(t))
		}
		if len(x.Meta) > 0 {
			m.Meta = make(map[string]string, len(x.Meta))
		}
		for _, kv := range x.Meta {
			m.Meta[string(kv[0])] = string(kv[1])
		}
		for j := range m.Strings {
			if j < len(x.Strings) {
				m.Strings[j].ID = string(x.Strings[j].ID)
			}
		}
	}
	return out, nil
}

func matchValidUTF8(m Match) bool {
	ok := utf8.ValidString(m.Rule) && utf8.ValidString(m.Namespace) && utf8.ValidString(m.RuleFile)
	for _, t := range m.Tags {
		ok = ok && utf8.ValidString(t)
	}
	for k, v := range m.Meta {
		ok = ok && utf8.ValidString(k) && utf8.ValidString(v)
	}
	for _, s := range m.Strings {
		ok = ok && utf8.ValidString(s.ID)
	}
	return ok
}

// valid replaces each run of invalid UTF-8 bytes in s with U+FFFD.
func valid(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
