package scanner

// The build flags mirror go-yara's cgo.go, so that this file finds the same
// yara.h as the library it wraps.

// #cgo !yara_no_pkg_config,!yara_static pkg-config: yara
// #cgo !yara_no_pkg_config,yara_static  pkg-config: --static yara
// #cgo yara_no_pkg_config               LDFLAGS:    -lyara -lm
// #include <yara.h>
import "C"

import "strconv"

// yaraVersion returns the version of libyara fanguard is built against,
// such as "4.2.3" (YR_MAJOR_VERSION and friends of yara.h; go-yara 4.2.4
// names none, and libyara has no call that reports it at run time).
// Compiled rules are only valid for the libyara that wrote them, so the
// version is part of the rules generation and of the cache's checks.
func yaraVersion() string {
	return strconv.Itoa(C.YR_MAJOR_VERSION) + "." + strconv.Itoa(C.YR_MINOR_VERSION) + "." + strconv.Itoa(C.YR_MICRO_VERSION)
}
