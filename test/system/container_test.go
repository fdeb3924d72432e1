//go:build system

// Package system tests fanguard as administrators run it: the .deb from
// `make package`, installed with apt-get in a Debian 12 root booted with
// systemd-nspawn -b, under a real systemd and journald. It runs with
// `make test-system` (root, network to a Debian mirror), never in
// `make test`: the build tag keeps it out of `go test ./...`.
//
// The root is bootstrapped with debootstrap once into a loop-mounted ext4
// image, cached in $FANGUARD_SYSTEM_CACHE (default /var/cache/fanguard-test)
// and copied for each run. The daemon in the container protects only a
// tmpfs of the container's own (/srv/protected): systemd-nspawn binds files
// of the host's root filesystem into the container (/run/host/os-release),
// and a whole-machine configuration would mark it. The test checks the
// daemon's marks from the host before anything else.
package system

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Where the root comes from. The mirror can be changed for a local one
// with FANGUARD_DEBIAN_MIRROR; the packages are what the checks use on top
// of minbase (curl for the metrics listener, procps for ps).
const (
	suite         = "bookworm"
	defaultMirror = "http://deb.debian.org/debian"
	imageSize     = 3 << 30
)

var bootstrapPackages = []string{"systemd", "systemd-sysv", "dbus", "curl", "procps"}

// cacheDir returns the directory that keeps bootstrapped images between
// runs.
func cacheDir() string {
	if d := os.Getenv("FANGUARD_SYSTEM_CACHE"); d != "" {
		return d
	}
	return "/var/cache/fanguard-test"
}

func mirror() string {
	if m := os.Getenv("FANGUARD_DEBIAN_MIRROR"); m != "" {
		return m
	}
	return defaultMirror
}

// baseImage returns the cached image of a freshly bootstrapped root,
// bootstrapping it first if it is not there. A failed bootstrap fails the
// test: a system test that cannot fetch its system has not passed.
func baseImage(t *testing.T) string {
	t.Helper()
	dir := cacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(suite + "\n" + mirror() + "\n" + strings.Join(bootstrapPackages, ",")))
	img := filepath.Join(dir, suite+"-"+hex.EncodeToString(sum[:6])+".img")

	// One bootstrap at a time: a second run waits for the first's image.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); err == nil {
		t.Logf("bootstrap: cached %s", img)
		return img
	}
	for _, tool := range []string{"debootstrap", "systemd-nspawn", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: make test-system installs debootstrap and systemd-container (make system-deps)", tool)
		}
	}

	start := time.Now()
	partial := img + ".partial"
	os.Remove(partial)
	if err := os.WriteFile(partial, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(partial, imageSize); err != nil {
		t.Fatal(err)
	}
	run(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", "-L", "fgsystem", partial)
	mnt := t.TempDir()
	run(t, time.Minute, "mount", "-o", "loop", partial, mnt)
	unmounted := false
	defer func() {
		if !unmounted {
			exec.Command("umount", "-l", mnt).Run()
		}
		os.Remove(partial)
	}()
	log := filepath.Join(dir, "debootstrap.log")
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(bootstrapPackages, ","), suite, mnt, mirror())
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	err = runContext(ctx, cmd)
	out.Close()
	if err != nil {
		t.Fatalf("debootstrap %s from %s: %v\n%s", suite, mirror(), err, tail(log, 20))
	}
	run(t, time.Minute, "umount", mnt)
	unmounted = true
	if err := os.Rename(partial, img); err != nil {
		t.Fatal(err)
	}
	t.Logf("bootstrap: %s %s (%s) from %s in %.0f s", suite, strings.Join(bootstrapPackages, ","), img, mirror(), time.Since(start).Seconds())
	return img
}

// container is a booted Debian root.
type container struct {
	root   string // where the root is mounted on the host
	name   string
	leader int // the container's init, as the host sees it
	nspawn *exec.Cmd
	log    string // systemd-nspawn's output: the console
}

// bootOptions are the files a container gets before it boots.
type bootOptions struct {
	// Files maps paths inside the container to their content, written
	// before boot (mode 0644, directories made as needed).
	Files map[string]string
	// Links maps symbolic link paths inside the container to their
	// targets.
	Links map[string]string
}

// boot copies the base image, mounts it, writes opts' files and boots it
// with systemd-nspawn -b. The container is powered off, and its image
// unmounted, when the test ends.
func boot(t *testing.T, base string, opts bootOptions) *container {
	t.Helper()
	work := t.TempDir()
	img := filepath.Join(work, "root.img")
	run(t, 5*time.Minute, "cp", "--sparse=always", base, img)
	root := filepath.Join(work, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, "mount", "-o", "loop", img, root)
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := exec.Command("umount", root).Run()
			if err == nil {
				return
			}
			if i == 20 {
				t.Errorf("unmounting %s: %v; unmounting lazily", root, err)
				exec.Command("umount", "-l", root).Run()
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
	for path, content := range opts.Files {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for path, target := range opts.Links {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}

	c := &container{
		root: root,
		name: "fgsystem-" + strconv.Itoa(os.Getpid()),
		log:  filepath.Join(work, "console.log"),
	}
	console, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	// --register=no and --keep-unit: systemd is not PID 1 on the host.
	// The system call filter adds what fanotify needs to nspawn's own.
	// --link-journal=no keeps the container's journal in the container.
	c.nspawn = exec.Command("systemd-nspawn", "-q", "-b", "-D", root, "-M", c.name,
		"--register=no", "--keep-unit", "--console=read-only",
		"--system-call-filter=fanotify_init fanotify_mark",
		"--link-journal=no", "--resolv-conf=copy-host", "--timezone=off")
	c.nspawn.Stdout, c.nspawn.Stderr = console, console
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	console.Close()
	exited := make(chan error, 1)
	go func() { exited <- c.nspawn.Wait() }()
	t.Cleanup(func() {
		// SIGTERM asks nspawn for an orderly poweroff of the container.
		c.nspawn.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Errorf("container %s did not power off in 60 s: killing it", c.name)
			c.nspawn.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("console of %s (last lines):\n%s", c.name, tail(c.log, 40))
		}
	})

	deadline := time.Now().Add(2 * time.Minute)
	for c.leader == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("container %s: no init process after 2 min\n%s", c.name, tail(c.log, 40))
		}
		select {
		case err := <-exited:
			t.Fatalf("systemd-nspawn exited: %v\n%s", err, tail(c.log, 40))
		case <-time.After(100 * time.Millisecond):
		}
		c.leader = initOf(c.nspawn.Process.Pid)
	}
	// Wait for the boot to finish: "running", or "degraded" when a unit
	// that does not matter here failed (it is logged).
	var state string
	for {
		state, _ = c.exec(10*time.Second, "systemctl is-system-running")
		state = strings.TrimSpace(state)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: system state %q after 2 min\n%s", c.name, state, tail(c.log, 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if state == "degraded" {
		failed, _ := c.exec(10*time.Second, "systemctl --failed --no-legend")
		t.Logf("container %s booted degraded: %s", c.name, failed)
	}
	return c
}

// initOf returns the pid of the child of nspawn (the container's init),
// or 0 while there is none.
func initOf(nspawn int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nspawn, nspawn))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	// The child execs systemd once it has set the container up.
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); !strings.HasSuffix(exe, "/systemd") {
		return 0
	}
	return pid
}

// command returns a shell command line that runs in the container: in
// every namespace of its init, with its root, and a clean environment.
func (c *container) command(ctx context.Context, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(c.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--",
		"/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=",
		"/bin/sh", "-c", script)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// exec runs script in the container and returns its output (standard
// output and error together).
func (c *container) exec(timeout time.Duration, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := c.command(ctx, script).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return string(out), err
}

// must runs script in the container and fails the test unless it exits 0.
func (c *container) must(t *testing.T, script string) string {
	t.Helper()
	out, err := c.exec(3*time.Minute, script)
	if err != nil {
		t.Fatalf("in the container: %s: %v\n%s", script, err, out)
	}
	return out
}

// fails runs script in the container and fails the test if it exits 0.
func (c *container) fails(t *testing.T, script string) string {
	t.Helper()
	out, err := c.exec(time.Minute, script)
	if err == nil {
		t.Fatalf("in the container: %s: succeeded, want a failure\n%s", script, out)
	}
	return out
}

// writeFile writes data to path inside the container, through the
// container's own mount namespace (so that it reaches its tmpfs).
func (c *container) writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, `cat > "$0"`)
	cmd.Args = append(cmd.Args, path)
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("writing %s in the container: %v\n%s", path, err, out)
	}
}

// waitFor runs script until it exits 0, and fails the test after timeout.
func (c *container) waitFor(t *testing.T, timeout time.Duration, what, script string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.exec(30*time.Second, script)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %s: %v\n%s", what, timeout, script, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// run runs a command on the host and fails the test unless it exits 0.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// runContext runs cmd, killing it when ctx ends.
func runContext(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// freePort returns a TCP port free on the host's loopback. The container
// shares the host's network (apt-get in it needs the mirror), so the
// metrics listener inside binds the host's loopback.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fanotifyMarks returns the devices of the filesystems the process pid
// has marked through fanotify, from the fdinfo of its fanotify groups
// ("fanotify sdev:..." lines for FAN_MARK_FILESYSTEM, "fanotify ino:...
// sdev:..." for inode and mount marks). Only filesystem marks are
// returned; inode marks are the verdict cache's ignore marks.
func fanotifyMarks(pid int) ([]uint64, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var devs []uint64
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			rest, ok := strings.CutPrefix(line, "fanotify sdev:")
			if !ok {
				continue
			}
			dev, err := strconv.ParseUint(strings.Fields(rest)[0], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", dir, line, err)
			}
			devs = append(devs, dev)
		}
	}
	return devs, nil
}

var errNoPID = errors.New("no main pid")

// mainPID returns the unit's main pid as the container sees it.
func (c *container) mainPID(unit string) (int, error) {
	out, err := c.exec(30*time.Second, "systemctl show -p MainPID --value "+unit)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return 0, err
	}
	if pid == 0 {
		return 0, errNoPID
	}
	return pid, nil
}

// hostPID returns the host's pid of the container's process pid.
func (c *container) hostPID(pid int) (int, error) {
	// Every process of the container descends from its init: find the
	// one whose innermost pid is pid.
	des, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := strconv.Itoa(pid)
	for _, de := range des {
		hp, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		f, err := os.Open("/proc/" + de.Name() + "/status")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(rest)
				if len(f) > 1 && f[len(f)-1] == want && sameNS(hp, c.leader) {
					return hp, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no host process for pid %d of the container", pid)
}

// sameNS reports whether processes a and b are in the same pid namespace.
func sameNS(a, b int) bool {
	na, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", a))
	nb, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", b))
	return err1 == nil && err2 == nil && na == nb
}
