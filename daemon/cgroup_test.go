package daemon

import (
	"os"
	"strings"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	const id = "3f2a9c1b7e6d5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a09"
	tests := []struct {
		name          string
		data          string
		unit, contain string
	}{
		{"service", "0::/system.slice/nginx.service\n", "nginx.service", ""},
		{"session", "0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope", ""},
		{"user service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope\n",
			"vte-spawn-1.scope", ""},
		{"delegated subgroup", "0::/system.slice/nginx.service/worker\n", "nginx.service", ""},
		{"docker under systemd", "0::/system.slice/docker-" + id + ".scope\n", "", id[:12]},
		{"docker cgroupfs", "0::/docker/" + id + "\n", "", id[:12]},
		{"containerd under kubernetes", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-" + id + ".scope\n",
			"", id[:12]},
		{"cri-o", "0::/kubepods.slice/kubepods-pod1.slice/crio-" + id + ".scope\n", "", id[:12]},
		{"podman rootless", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope/container\n",
			"user@1000.service", id[:12]},
		{"systemd in a container", "0::/system.slice/docker-" + id + ".scope/init.scope\n", "init.scope", id[:12]},
		{"hybrid v1 and v2", "12:pids:/system.slice/sshd.service\n1:name=systemd:/system.slice/sshd.service\n0::/system.slice/sshd.service\n",
			"sshd.service", ""},
		{"v1 only", "12:memory:/user.slice\n1:name=systemd:/system.slice/cron.service\n", "cron.service", ""},
		{"root cgroup", "0::/\n", "", ""},
		{"init", "0::/init.scope\n", "init.scope", ""},
		{"no unit", "0::/machine.slice\n", "", ""},
		{"short id is no container", "0::/docker/3f2a9c1b7e6d\n", "", ""},
		{"upper-case hex is no container id", "0::/docker/" + strings.ToUpper(id) + "\n", "", ""},
		{"bare suffix is no unit", "0::/system.slice/.service\n", "", ""},
		{"relative path", "0::system.slice/x.service\n", "", ""},
		{"empty", "", "", ""},
		{"garbage", "\x00\xff::::\n:\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit, container := parseCgroup([]byte(tt.data))
			if unit != tt.unit || container != tt.contain {
				t.Errorf("parseCgroup(%q) = %q, %q; want %q, %q", tt.data, unit, container, tt.unit, tt.contain)
			}
		})
	}
}

// TestOpenerCgroupSelf reads this process's own cgroup file, whatever it
// holds, as describe reads an opener's.
func TestOpenerCgroupSelf(t *testing.T) {
	unit, container, err := openerCgroup(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	wantUnit, wantContainer := parseCgroup(data)
	if unit != wantUnit || container != wantContainer {
		t.Errorf("openerCgroup(self) = %q, %q; parseCgroup of /proc/self/cgroup gives %q, %q", unit, container, wantUnit, wantContainer)
	}
	if _, _, err := openerCgroup(-1); err == nil {
		t.Error("openerCgroup(-1) succeeded")
	}
}

// FuzzParseCgroup: /proc/PID/cgroup of an opener is not ours to choose
// (cgroup names are set by whoever may create them). The parser must not
// panic, and what it returns is a path component of the input: no "/" or
// newline, and a container id is 12 lower-case hex digits.
func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/nginx.service\n"))
	f.Add([]byte("0::/user.slice/user-1000.slice/session-3.scope\n"))
	f.Add([]byte("0::/system.slice/docker-3f2a9c1b7e6d5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a09.scope\n"))
	f.Add([]byte("1:name=systemd:/docker/3f2a9c1b7e6d5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a09\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		unit, container := parseCgroup(data)
		if strings.ContainsAny(unit, "/\n") {
			t.Errorf("unit %q holds a / or a newline", unit)
		}
		if unit != "" && !strings.Contains(string(data), unit) {
			t.Errorf("unit %q is not in the input", unit)
		}
		if container != "" {
			if len(container) != 12 || strings.Trim(container, "0123456789abcdef") != "" {
				t.Errorf("container %q is not 12 lower-case hex digits", container)
			}
			if !strings.Contains(string(data), container) {
				t.Errorf("container %q is not in the input", container)
			}
		}
	})
}
