// Package manpage writes fanguard's manual pages in roff (man(7)): the
// page of the configuration file, fanguard.toml(5), made from the comments
// of the shipped configs/fanguard.toml, so that the file and its page say
// the same. The pages of the commands come from the command tree (cobra's
// doc package, in cmd/fanguard). It never reads anything but what it is
// given.
package manpage

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"time"
)

// ConfigOptions tunes Config. The zero value means the defaults.
type ConfigOptions struct {
	// Date is the page's date in its footer; the zero time means none.
	Date time.Time
	// Source is the footer's source field, such as "fanguard 1.2"; ""
	// means "fanguard".
	Source string
	// Path is where the configuration file is installed, named in the
	// page; "" means /etc/fanguard/fanguard.toml.
	Path string
}

// Config renders fanguard.toml(5) from the text of a configuration file in
// the form of configs/fanguard.toml: a header comment, then each key as a
// comment starting "# key:" above a "key = value" line, keys grouped under
// [table] headers. Comment lines indented by two spaces or more (lists of
// values, examples) are kept as they are; the others are filled.
func Config(toml []byte, o ConfigOptions) []byte {
	if o.Source == "" {
		o.Source = "fanguard"
	}
	if o.Path == "" {
		o.Path = "/etc/fanguard/fanguard.toml"
	}
	var b bytes.Buffer
	date := ""
	if !o.Date.IsZero() {
		date = o.Date.Format("2006-01-02")
	}
	fmt.Fprintf(&b, ".TH FANGUARD.TOML 5 %q %q \"File Formats\"\n", date, o.Source)
	b.WriteString(".SH NAME\nfanguard.toml \\- configuration of fanguard, the on-access malware scanner\n")
	b.WriteString(".SH SYNOPSIS\n" + escape(o.Path) + "\n")
	b.WriteString(".SH DESCRIPTION\n")

	var comment []string // the comment block being read
	table := ""          // the current [table], "" at the top
	header := true       // still in the file's first comment
	flush := func() {
		writeText(&b, comment, false)
		comment = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(toml))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			text := strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
			if header && strings.HasPrefix(text, "fanguard.toml:") {
				continue // the file's title: the page has its own
			}
			comment = append(comment, text)
		case strings.TrimSpace(line) == "":
			if header && len(comment) > 0 {
				flush()
				header = false
				b.WriteString(".SH KEYS\nThe keys outside any table come first, then each table's.\n")
				continue
			}
			if len(comment) > 0 && !startsKey(comment) {
				flush() // a comment on its own: part of the text
			}
		case strings.HasPrefix(line, "["):
			flush()
			table = strings.Trim(strings.TrimSpace(line), "[]")
			fmt.Fprintf(&b, ".SS [%s]\n", escape(table))
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key, value = strings.TrimSpace(key), strings.TrimSpace(value)
			full := key
			if table != "" {
				full = table + "." + key
			}
			fmt.Fprintf(&b, ".TP\n.B %s\n", escape(full))
			if startsKey(comment) {
				comment[0] = strings.TrimSpace(strings.TrimPrefix(comment[0], key+":"))
			}
			writeText(&b, comment, true)
			comment = nil
			fmt.Fprintf(&b, ".IP\nShipped as: %s\n", escape(key+" = "+value))
		}
	}
	flush()
	b.WriteString(".SH FILES\n.TP\n" + escape(o.Path) + "\nthe configuration file, read at start, by\n.BR \"fanguard daemon \\-\\-check\" ,\nand at each reload.\n")
	b.WriteString(".TP\n" + escape(o.Path+".d/*.toml") + "\nthe drop-ins, read after it in the order of their names, each over the files before it.\n")
	b.WriteString(".SH SEE ALSO\n.BR fanguard (8)\n")
	return b.Bytes()
}

// startsKey reports whether a comment block documents a key ("# key: ...").
func startsKey(comment []string) bool {
	if len(comment) == 0 {
		return false
	}
	k, _, ok := strings.Cut(comment[0], ":")
	return ok && k != "" && !strings.ContainsAny(k, " \t[]\"`")
}

// maxLiteral is the longest comment line kept as it is in a key's text,
// indented more, and maxLiteralTop at the left margin: a longer one would
// run past the page's right margin (80 columns).
const (
	maxLiteral    = 64
	maxLiteralTop = 72
)

// writeText writes comment lines as roff: runs of indented lines as they
// are, in a no-fill block; the others filled. A blank comment line starts
// a paragraph, indented as the key's text when inKey.
func writeText(b *bytes.Buffer, lines []string, inKey bool) {
	literal := false
	limit := maxLiteralTop
	if inKey {
		limit = maxLiteral
	}
	for _, l := range lines {
		indented := strings.HasPrefix(l, "  ") || strings.HasPrefix(l, "[") || strings.Contains(l, " = ") && !strings.Contains(l, ". ")
		switch {
		case strings.TrimSpace(l) == "":
			if literal {
				b.WriteString(".fi\n")
				literal = false
			}
			if inKey {
				b.WriteString(".IP\n")
			} else {
				b.WriteString(".PP\n")
			}
			continue
		case indented && !literal:
			b.WriteString(".nf\n")
			literal = true
		case !indented && literal:
			b.WriteString(".fi\n")
			literal = false
		}
		if literal {
			for _, w := range wrap(l, limit) {
				if len(w) > limit {
					// One word too long for the page: filled, breakable
					// after each "/", not adjusted.
					b.WriteString(".fi\n.na\n" + strings.ReplaceAll(escape(w), "/", `/\:`) + "\n.nf\n.ad\n")
					continue
				}
				b.WriteString(escape(w) + "\n")
			}
			continue
		}
		b.WriteString(escape(l) + "\n")
	}
	if literal {
		b.WriteString(".fi\n")
	}
}

// escape makes text safe as a roff text line: backslashes and hyphens
// escaped, other characters than ASCII written as \[uXXXX], and a leading
// control character neutralized.
func escape(s string) string {
	var b strings.Builder
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		b.WriteString(`\&`)
	}
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > 0x7e || r < 0x20 && r != '\t':
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// wrap cuts a line kept as it is into lines of at most limit bytes at
// spaces, each continuation indented two more than the line.
func wrap(l string, limit int) []string {
	indent := strings.Repeat(" ", len(l)-len(strings.TrimLeft(l, " "))+2)
	var out []string
	for len(l) > limit {
		i := strings.LastIndex(l[:limit+1], " ")
		if i <= len(indent) {
			break
		}
		out = append(out, l[:i])
		l = indent + strings.TrimLeft(l[i:], " ")
	}
	return append(out, l)
}
