package scanner

// Class is a file class: the rules are compiled once per class, each set
// holding only the rules that can match content of that class, and a scan
// uses the set of its content's class (see ClassOf).
type Class uint8

// The classes. ClassOf decides which one content belongs to.
const (
	ClassOther Class = iota // anything else, including empty content
	ClassPE                 // starts with "MZ"
	ClassELF                // starts with "\x7fELF"
	ClassMachO              // a thin Mach-O magic, or a fat one with a small architecture count
	numClasses
)

// Classes lists every class, in the order of the constants.
var Classes = [numClasses]Class{ClassOther, ClassPE, ClassELF, ClassMachO}

// String returns the class's name: "other", "PE", "ELF" or "Mach-O".
func (c Class) String() string {
	switch c {
	case ClassPE:
		return "PE"
	case ClassELF:
		return "ELF"
	case ClassMachO:
		return "Mach-O"
	case ClassOther:
		return "other"
	}
	return "unknown"
}

// byteRange is the set of byte values lo..hi.
type byteRange struct{ lo, hi byte }

func (r byteRange) has(b byte) bool { return r.lo <= b && b <= r.hi }

// pattern is a head pattern: content matches it when it is at least as
// long and each of its first bytes lies in the pattern's range there.
type pattern []byteRange

// exact is the pattern of the bytes of s.
func exact(s string) pattern {
	p := make(pattern, len(s))
	for i := range len(s) {
		p[i] = byteRange{s[i], s[i]}
	}
	return p
}

// fat is the pattern of a fat Mach-O header with the magic m: a big-endian
// architecture count of 1 to 19 follows. Java class files share the magic,
// but there the word is a class file version (45 and up): they are not
// Mach-O.
func fat(m string) pattern {
	return append(exact(m+"\x00\x00\x00"), byteRange{1, maxFatArch})
}

// maxFatArch is the largest architecture count of a fat Mach-O header
// (filetype calls such content MACH-O).
const maxFatArch = 19

// classPatterns are the patterns of each class but Other, which is content
// that matches none. The patterns of different classes start with different
// bytes, so no content matches two classes. They are the single definition
// of the classes: ClassOf and the analysis of rule conditions both read
// them.
var classPatterns = [numClasses][]pattern{
	ClassPE:  {exact("MZ")},
	ClassELF: {exact("\x7fELF")},
	ClassMachO: {
		exact("\xfe\xed\xfa\xce"), exact("\xfe\xed\xfa\xcf"), exact("\xce\xfa\xed\xfe"), exact("\xcf\xfa\xed\xfe"),
		fat("\xca\xfe\xba\xbe"), fat("\xca\xfe\xba\xbf"),
	},
}

// ClassOf returns the class of content that starts with head; 8 bytes are
// enough, and a shorter head is taken to be the whole content. Scanner.Scan
// dispatches with it.
func ClassOf(head []byte) Class {
	for c := ClassPE; c < numClasses; c++ {
		for _, p := range classPatterns[c] {
			if p.matches(head) {
				return c
			}
		}
	}
	return ClassOther
}

// matches reports whether content starting with head (and no longer when
// head is shorter than p) matches p.
func (p pattern) matches(head []byte) bool {
	if len(head) < len(p) {
		return false
	}
	for i, r := range p {
		if !r.has(head[i]) {
			return false
		}
	}
	return true
}

// compatible reports whether some content matching p starts with b.
func (p pattern) compatible(b []byte) bool {
	for i := 0; i < len(p) && i < len(b); i++ {
		if !p[i].has(b[i]) {
			return false
		}
	}
	return true
}

// The facts each class guarantees about the first bytes of its content,
// exact with respect to ClassOf (a test checks them against it on every
// short head). They answer three questions about a byte string b of
// length n ≥ 1, for some content of class c: can it start with b
// (canStart), can it be at least n bytes long and not start with b
// (canDiffer), can it be shorter than n bytes (canShort)?

// canStart reports whether content of class c can start with b.
func canStart(c Class, b []byte) bool {
	if c == ClassOther {
		// The classes are closed under extension: content that starts
		// with b is of b's class, unless b itself is Other.
		return ClassOf(b) == ClassOther
	}
	for _, p := range classPatterns[c] {
		if p.compatible(b) {
			return true
		}
	}
	return false
}

// canDiffer reports whether content of class c can be len(b) bytes long or
// longer and not start with b.
func canDiffer(c Class, b []byte) bool {
	if c == ClassOther {
		// len(b) bytes of 0x00 (or of 0x01 when b is all zeros): no
		// class starts with either.
		return true
	}
	for _, p := range classPatterns[c] {
		if len(b) > len(p) {
			return true // a free byte past the pattern can differ
		}
		for i := range b {
			if p[i].lo != b[i] || p[i].hi != b[i] {
				return true
			}
		}
	}
	return false
}

// canShort reports whether content of class c can be shorter than n bytes.
func canShort(c Class, n int) bool {
	if c == ClassOther {
		return n > 0 // empty content is Other
	}
	for _, p := range classPatterns[c] {
		if len(p) < n {
			return true
		}
	}
	return false
}
