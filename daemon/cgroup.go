package daemon

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// maxCgroupFile bounds what is read of /proc/PID/cgroup: a cgroup v2 host
// has one line; a hybrid v1 host about a dozen.
const maxCgroupFile = 8 << 10

// openerCgroup reads /proc/pid/cgroup (at most maxCgroupFile bytes, into a
// buffer of its own: one runs for every detection) and returns the unit
// and container parseCgroup finds there. Call it through bounded: procfs
// reads of another process are not ours to time.
func openerCgroup(pid int32) (unit, container string, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/cgroup")
	if err != nil {
		return "", "", fmt.Errorf("reading cgroup of pid %d: %w", pid, err)
	}
	defer f.Close()
	var buf [maxCgroupFile]byte
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", "", fmt.Errorf("reading cgroup of pid %d: %w", pid, err)
		}
	}
	unit, container = parseCgroup(buf[:n])
	return unit, container, nil
}

// containerPrefixes are the prefixes of the scope (or directory) names that
// container engines give a container's cgroup, before its id: Docker and
// Podman under systemd ("docker-<id>.scope", "libpod-<id>.scope"),
// containerd and CRI-O under Kubernetes ("cri-containerd-<id>.scope",
// "crio-<id>.scope").
var containerPrefixes = []string{"docker-", "libpod-", "cri-containerd-", "crio-", "containerd-"}

// parseCgroup reads /proc/PID/cgroup content and returns the systemd unit
// the process runs in ("nginx.service", "session-3.scope") and the
// container it runs in, as the first 12 hex digits of its id as docker and
// podman show it. Either is "" when there is none or the content is not
// understood. The cgroup v2 line ("0::/path") is used; without one, the
// v1 hierarchy systemd keeps ("N:name=systemd:/path").
//
// The container is the last path component that is a container engine's
// scope ("docker-<64 hex>.scope", "cri-containerd-<id>.scope", ...) or
// holds a 64-hex-digit id alone ("/docker/<id>", cgroupfs drivers). The
// unit is the last component, other than a container's, that ends in
// ".service" or ".scope": "/user.slice/user-1000.slice/session-3.scope"
// gives "session-3.scope", "/system.slice/nginx.service/worker" gives
// "nginx.service".
func parseCgroup(data []byte) (unit, container string) {
	var path []byte
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		id, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		ctrl, p, ok := bytes.Cut(rest, []byte(":"))
		if !ok {
			continue
		}
		if string(id) == "0" && len(ctrl) == 0 {
			path = p
			break
		}
		if string(ctrl) == "name=systemd" && path == nil {
			path = p
		}
	}
	if len(path) == 0 || path[0] != '/' {
		return "", ""
	}
	for c := range strings.SplitSeq(string(path[1:]), "/") {
		if id := containerID(c); id != "" {
			container = id
			continue
		}
		if strings.HasSuffix(c, ".service") && len(c) > len(".service") || strings.HasSuffix(c, ".scope") && len(c) > len(".scope") {
			unit = c
		}
	}
	return unit, container
}

// containerID returns the short id (12 hex digits) of the container whose
// cgroup a path component c names, or "".
func containerID(c string) string {
	id := c
	if s, ok := strings.CutSuffix(id, ".scope"); ok {
		for _, p := range containerPrefixes {
			if rest, ok := strings.CutPrefix(s, p); ok {
				id = rest
				break
			}
		}
	}
	if len(id) != 64 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	return id[:12]
}
