package policy

import (
	"math"
	"strconv"
	"strings"
)

// parseSize parses a byte count such as "33554432", "32MiB", "512 KiB" or
// "10M". The unit is case-insensitive: none or B is bytes; K, M, G, T and
// KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB are powers of 1000.
// The number is a non-negative decimal integer. A size too large for an
// int64 gives math.MaxInt64, so that range checks reject it. ok is false
// when s is not a size at all.
func parseSize(s string) (n int64, ok bool) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, false
	}
	var mult int64
	switch strings.ToLower(strings.TrimSpace(s[i:])) {
	case "", "b":
		mult = 1
	case "k", "kib":
		mult = 1 << 10
	case "m", "mib":
		mult = 1 << 20
	case "g", "gib":
		mult = 1 << 30
	case "t", "tib":
		mult = 1 << 40
	case "kb":
		mult = 1e3
	case "mb":
		mult = 1e6
	case "gb":
		mult = 1e9
	case "tb":
		mult = 1e12
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		// Only digits, so the error can only be a range error.
		return math.MaxInt64, true
	}
	return n * mult, true
}
