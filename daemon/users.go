package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// LoadOwners reads user names from a passwd(5) file (normally /etc/passwd)
// for the rules' "owner" variable. The daemon calls it before it places any
// mark: afterwards it never opens that file again. Malformed lines are
// skipped.
func LoadOwners(path string) (map[uint32]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	return parsePasswd(data), nil
}

func parsePasswd(data []byte) map[uint32]string {
	owners := make(map[uint32]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.SplitN(sc.Bytes(), []byte(":"), 4)
		if len(f) < 4 || len(f[0]) == 0 || f[0][0] == '#' {
			continue
		}
		uid, err := strconv.ParseUint(string(f[2]), 10, 32)
		if err != nil {
			continue
		}
		if _, dup := owners[uint32(uid)]; !dup {
			owners[uint32(uid)] = string(f[0])
		}
	}
	return owners
}
