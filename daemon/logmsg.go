package daemon

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
)

// Every log entry's message reads on its own, without its fields: syslog,
// `journalctl` without -o verbose and a terminal show only the message. The
// fields stay as they are, for queries and tools. A path or any other text
// an attacker chooses goes into a message through printable, so that one
// entry stays one line and holds nothing a terminal would act on.

// printable returns s as it is when strconv calls every rune of it
// printable, else Go-quoted (with escapes such as \n and \x1b): a file name
// is the attacker's to choose.
func printable[T ~string | ~[]byte](s T) string {
	q := strconv.Quote(string(s))
	if q[1:len(q)-1] == string(s) {
		return string(s)
	}
	return q
}

// plural returns "1 rule", "2 rules", "3 entries": n and the noun, in the
// plural unless n is 1.
func plural[T ~int | ~int64 | ~uint64](n T, noun string) string {
	s := strconv.FormatUint(uint64(n), 10)
	if n < 0 {
		s = strconv.FormatInt(int64(n), 10)
	}
	switch {
	case n == 1:
		return s + " " + noun
	case strings.HasSuffix(noun, "y"):
		return s + " " + noun[:len(noun)-1] + "ies"
	}
	return s + " " + noun + "s"
}

// detectionMessage is the message of a detection's log entry, for one of
// its matches and the record id (-1: not recorded), such as
//
//	detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, quarantined (record 7)
//
// A late detection and a detection on close say so. The rule's severity
// (rule metadata) follows its name, and its description ends the message,
// when it has them.
func detectionMessage(det *Detection, m *scanner.Match, id int64) string {
	var b strings.Builder
	switch {
	case det.OnClose:
		b.WriteString("detection on close: ")
	case det.Late:
		b.WriteString("late detection: ")
	default:
		b.WriteString("detection: ")
	}
	b.WriteString(printable(m.Rule))
	if sev := m.Meta["severity"]; sev != "" {
		b.WriteString(" (severity " + printable(sev) + ")")
	}
	b.WriteString(" in ")
	b.WriteString(printable(det.Path))
	if det.OnClose {
		b.WriteString(" written by ")
	} else {
		b.WriteString(" opened by ")
	}
	b.WriteString(openerText(det))
	b.WriteString(": ")
	b.WriteString(outcomeText(det, id))
	if desc := m.Meta["description"]; desc != "" {
		b.WriteString("; " + printable(desc))
	}
	return b.String()
}

// openerText describes who opened (or, on close, wrote) a detected file:
// "/usr/bin/cat (pid 123, uid 1000 alice, unit nginx.service)".
func openerText(det *Detection) string {
	var b strings.Builder
	switch {
	case det.Exe != "":
		b.WriteString(printable(det.Exe) + " (pid " + strconv.Itoa(int(det.PID)))
	case det.OpenerExited:
		b.WriteString("a process that has exited (pid " + strconv.Itoa(int(det.PID)))
	case det.OpenerUnread:
		b.WriteString("a process that could not be read in time (pid " + strconv.Itoa(int(det.PID)))
	default:
		b.WriteString("an unknown program (pid " + strconv.Itoa(int(det.PID)))
	}
	if det.UID < 0 {
		b.WriteString(", uid unknown")
	} else {
		b.WriteString(", uid " + strconv.FormatInt(det.UID, 10))
		if det.User != "" {
			b.WriteString(" " + printable(det.User))
		}
	}
	if det.Container != "" {
		b.WriteString(", container " + printable(det.Container))
	} else if det.Unit != "" {
		b.WriteString(", unit " + printable(det.Unit))
	}
	b.WriteString(")")
	return b.String()
}

// outcomeText says what came of a detection: the answer, and what was done
// with the file ("denied, quarantined (record 7)").
func outcomeText(det *Detection, id int64) string {
	answered := "allowed"
	if det.Answered == policy.Deny {
		answered = "denied"
	}
	var s string
	switch {
	case det.OnClose:
		s = "later opens " + answered
	case det.Late:
		s = "the budget ran out before the scan finished: " + answered + " by on_timeout"
	default:
		s = answered
	}
	switch det.Action {
	case policy.ActionAudit:
		s += ", audit only"
	case policy.ActionQuarantine:
		if id >= 0 {
			return s + ", quarantined (record " + strconv.FormatInt(id, 10) + ")"
		}
		return s + ", not quarantined: not recorded"
	}
	if id < 0 {
		return s + ", not recorded"
	}
	return s + " (record " + strconv.FormatInt(id, 10) + ")"
}

// rulesText describes a rule set in force: "120 rules (generation
// 3f2a9c1b, loaded in 1.2s from the cache)".
func rulesText(rs *scanner.Ruleset) string {
	from := ""
	if rs.FromCache {
		from = " from the cache"
	}
	return fmt.Sprintf("%s (generation %s, loaded in %s%s)", plural(rs.Count, "rule"), rs.ShortGeneration(),
		rs.LoadTime.Round(time.Millisecond), from)
}

// reloadedMessage is the message of a reload that put rs in force:
// "rules reloaded: 120 rules from 4 files (generation 3f2a9c1b), 1 file
// left out, took 1.2s"; unchanged rules say so.
func reloadedMessage(rs *scanner.Ruleset, unchanged bool, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules reloaded: %s from %s (generation %s", plural(rs.Count, "rule"), plural(len(rs.Files), "file"), rs.ShortGeneration())
	if unchanged {
		b.WriteString(", unchanged: the rules in force stay")
	}
	if rs.FromCache {
		b.WriteString(", from the cache")
	}
	b.WriteString(")")
	if len(rs.Broken) > 0 {
		fmt.Fprintf(&b, ", %s left out", plural(len(rs.Broken), "broken file"))
	}
	fmt.Fprintf(&b, ", took %s", took.Round(time.Millisecond))
	return b.String()
}

// summary is the message of the counters' log entry: what, then the
// counters an administrator looks at first ("stats: 1200 events, 300 scans,
// 2 detections, 0 timed out, 0 overloaded, 0 errors, p99 latency 1.2ms").
func (s *Stats) summary(what string) string {
	return fmt.Sprintf("%s: %s, %s, %s, %d timed out, %d overloaded, %s, decision latency p50 %s, p99 %s",
		what, plural(s.Events.Load(), "event"), plural(s.Scans.Load(), "scan"), plural(s.Detections.Load(), "detection"),
		s.TimedOut.Load(), s.Overloaded.Load(), plural(s.Errors.Load(), "error"),
		s.Decision.quantile(0.50), s.Decision.quantile(0.99))
}
