package quarantine

import (
	"slices"
	"unicode/utf8"
)

// Caps on the variable parts of a record. Much of a record is chosen by
// whoever opened the file (its command line, its path, the bytes that
// matched, how many rules match) and a detection flood repeats it, so
// Store.Add bounds every part itself, whatever its caller did before: a
// record's variable parts take some tens of KiB at most, however large
// what it was given. Where a cut loses something an administrator wants to
// know, the record keeps how much there was (Record.CmdlineLen,
// StringMatch.Len, Match.StringsOmitted, Record.MatchesOmitted).
const (
	// MaxCmdline is the most bytes of the opener's command line a record
	// keeps: the first MaxCmdline bytes, with the whole length in
	// Record.CmdlineLen. 4 KiB shows a program and its first arguments;
	// argument lists run to MiBs (ARG_MAX is a quarter of the stack limit).
	MaxCmdline = 4 << 10
	// MaxPath is the most bytes of a path a record keeps (Record.Path,
	// Record.Exe, Match.RuleFile): PATH_MAX. The kernel gives no longer
	// paths, so a path is kept whole in practice; a longer one is cut.
	MaxPath = 4096
	// MaxName is the most bytes of a name a record keeps: rule, namespace,
	// tag, metadata key, string identifier, rules generation, sha256,
	// vault name, the opener's user name, unit and container, and the name
	// of an Actor. YARA identifiers have at most 128 bytes, file names 255.
	MaxName = 256
	// MaxMetaValue is the most bytes of a rule metadata value a record
	// keeps.
	MaxMetaValue = 512
	// MaxTags is the most tags a record keeps per match (the first ones).
	MaxTags = 16
	// MaxMeta is the most metadata entries a record keeps per match (the
	// first ones in the order of their keys).
	MaxMeta = 16
	// MaxStrings is the most matched strings a record keeps per match (the
	// first ones); Match.StringsOmitted counts the rest. A file can repeat
	// a string a million times.
	MaxStrings = 16
	// MaxMatchData is the most bytes of a matched string a record keeps:
	// the first MaxMatchData bytes, with the whole length in
	// StringMatch.Len.
	MaxMatchData = 64
	// MaxMatches is the most matching rules a record keeps (the first
	// ones); Record.MatchesOmitted counts the rest. A file can be made to
	// match many rules of a large rule set.
	MaxMatches = 32
	// MaxMatchesBytes bounds the stored form (JSON) of a record's matches:
	// a match after the first that would take it past MaxMatchesBytes is
	// left out and counted in Record.MatchesOmitted. The first match is
	// always kept; the caps above bound it.
	MaxMatchesBytes = 32 << 10
	// MaxDetail is the most bytes of an Event's Detail a record keeps (an
	// error message quoting a long path, for one).
	MaxDetail = 4096
)

// cutBytes returns b cut to at most n bytes.
func cutBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// cutString returns s cut to at most n bytes. A valid UTF-8 string is cut
// before the rune that would cross the limit, so that it stays valid.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if !utf8.ValidString(s) {
		return s[:n]
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// bounded returns a copy of r cut to the caps (see MaxCmdline and the
// rest), with its lengths and counts filled in: CmdlineLen at least
// len(Cmdline), each StringMatch.Len at least len(Data), Count at least 1
// and LastSeen at least Time. The matches are returned in their stored
// form. r is not modified; the copy shares no slice or map with r that
// it changes.
func bounded(r *Record) (Record, []byte, error) {
	b := *r
	b.History = nil
	if b.State == "" {
		b.State = StateRecorded
	}
	b.SHA256 = cutString(b.SHA256, MaxName)
	b.Path = cutBytes(b.Path, MaxPath)
	b.Exe = cutBytes(b.Exe, MaxPath)
	b.CmdlineLen = max(b.CmdlineLen, int64(len(b.Cmdline)))
	b.Cmdline = cutBytes(b.Cmdline, MaxCmdline)
	b.RulesGeneration = cutString(b.RulesGeneration, MaxName)
	b.ProcUser = cutString(b.ProcUser, MaxName)
	b.Unit = cutString(b.Unit, MaxName)
	b.Container = cutString(b.Container, MaxName)
	b.VaultName = cutString(b.VaultName, MaxName)
	b.Count = max(b.Count, 1)
	if b.LastSeen.Before(b.Time) {
		b.LastSeen = b.Time
	}
	b.MatchesOmitted = max(b.MatchesOmitted, 0)

	b.Matches = nil
	var parts [][]byte
	size := 2 // the brackets
	for i, m := range r.Matches {
		if i == MaxMatches {
			b.MatchesOmitted += len(r.Matches) - i
			break
		}
		bm := boundedMatch(m)
		enc, err := encodeMatch(bm)
		if err != nil {
			return Record{}, nil, err
		}
		if i > 0 && size+1+len(enc) > MaxMatchesBytes {
			b.MatchesOmitted += len(r.Matches) - i
			break
		}
		size += len(enc)
		if i > 0 {
			size++
		}
		b.Matches = append(b.Matches, bm)
		parts = append(parts, enc)
	}
	return b, joinJSON(parts), nil
}

// boundedMatch returns a copy of m cut to the caps.
func boundedMatch(m Match) Match {
	b := Match{
		Rule:           cutString(m.Rule, MaxName),
		Namespace:      cutString(m.Namespace, MaxName),
		RuleFile:       cutString(m.RuleFile, MaxPath),
		StringsOmitted: max(m.StringsOmitted, 0),
	}
	if m.Tags != nil {
		b.Tags = make([]string, 0, min(len(m.Tags), MaxTags))
		for _, t := range m.Tags[:min(len(m.Tags), MaxTags)] {
			b.Tags = append(b.Tags, cutString(t, MaxName))
		}
	}
	if m.Meta != nil {
		keys := make([]string, 0, len(m.Meta))
		for k := range m.Meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.Meta = make(map[string]string, min(len(keys), MaxMeta))
		for _, k := range keys[:min(len(keys), MaxMeta)] {
			// Two keys cut to the same prefix keep the first one's value.
			ck := cutString(k, MaxName)
			if _, dup := b.Meta[ck]; !dup {
				b.Meta[ck] = cutString(m.Meta[k], MaxMetaValue)
			}
		}
	}
	if m.Strings != nil {
		n := min(len(m.Strings), MaxStrings)
		b.StringsOmitted += len(m.Strings) - n
		b.Strings = make([]StringMatch, 0, n)
		for _, s := range m.Strings[:n] {
			b.Strings = append(b.Strings, StringMatch{
				ID:     cutString(s.ID, MaxName),
				Offset: s.Offset,
				Len:    max(s.Len, int64(len(s.Data))),
				Data:   cutBytes(s.Data, MaxMatchData),
			})
		}
	}
	return b
}

// boundedEvent returns e with its detail and actor name cut to the caps.
func boundedEvent(e Event) Event {
	e.What = cutString(e.What, MaxName)
	e.By.Name = cutString(e.By.Name, MaxName)
	e.Detail = cutString(e.Detail, MaxDetail)
	return e
}
