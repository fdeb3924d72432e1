package daemon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fanguard/fanguard/fan"
	"github.com/fanguard/fanguard/policy"
	"github.com/fanguard/fanguard/scanner"
	"github.com/fanguard/fanguard/systemd"
)

func TestDetectionMessage(t *testing.T) {
	eicar := scanner.Match{Rule: "EICAR_Test_File"}
	rated := scanner.Match{Rule: "Webshell_X", Meta: map[string]string{"severity": "high", "description": "PHP web shell"}}
	base := func(change func(*Detection)) *Detection {
		det := &Detection{Path: []byte("/tmp/x.com"), PID: 123, Exe: "/usr/bin/cat", UID: 1000, User: "alice",
			Action: policy.ActionQuarantine, Verdict: policy.Deny, Answered: policy.Deny}
		if change != nil {
			change(det)
		}
		return det
	}
	tests := []struct {
		name  string
		det   *Detection
		match scanner.Match
		id    int64
		want  string
	}{
		{"the issue's example", base(nil), eicar, 7,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, quarantined (record 7)"},
		{"deny", base(func(d *Detection) { d.Action = policy.ActionDeny }), eicar, 8,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied (record 8)"},
		{"audit", base(func(d *Detection) { d.Action, d.Answered = policy.ActionAudit, policy.Allow }), eicar, 9,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): allowed, audit only (record 9)"},
		{"not recorded", base(nil), eicar, -1,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, not quarantined: not recorded"},
		{"deny not recorded", base(func(d *Detection) { d.Action = policy.ActionDeny }), eicar, -1,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, not recorded"},
		{"late", base(func(d *Detection) { d.Late, d.Answered = true, policy.Allow }), eicar, 10,
			"late detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): " +
				"the budget ran out before the scan finished: allowed by on_timeout, quarantined (record 10)"},
		{"on close", base(func(d *Detection) { d.OnClose = true }), eicar, 11,
			"detection on close: EICAR_Test_File in /tmp/x.com written by /usr/bin/cat (pid 123, uid 1000 alice): later opens denied, quarantined (record 11)"},
		{"severity and description", base(func(d *Detection) { d.Unit = "php-fpm.service" }), rated, 12,
			"detection: Webshell_X (severity high) in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice, unit php-fpm.service): denied, quarantined (record 12); PHP web shell"},
		{"severity only", base(nil), scanner.Match{Rule: "R", Meta: map[string]string{"severity": "low"}}, 1,
			"detection: R (severity low) in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, quarantined (record 1)"},
		{"container before unit", base(func(d *Detection) { d.Unit, d.Container = "init.scope", "3f2a9c1b7e6d" }), eicar, 13,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice, container 3f2a9c1b7e6d): denied, quarantined (record 13)"},
		{"no user name", base(func(d *Detection) { d.User = "" }), eicar, 14,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000): denied, quarantined (record 14)"},
		{"unknown uid", base(func(d *Detection) { d.UID, d.User = -1, "" }), eicar, 15,
			"detection: EICAR_Test_File in /tmp/x.com opened by /usr/bin/cat (pid 123, uid unknown): denied, quarantined (record 15)"},
		{"opener exited", base(func(d *Detection) { d.Exe, d.OpenerExited = "", true }), eicar, 16,
			"detection: EICAR_Test_File in /tmp/x.com opened by a process that has exited (pid 123, uid 1000 alice): denied, quarantined (record 16)"},
		{"opener unread", base(func(d *Detection) { d.Exe, d.OpenerUnread = "", true }), eicar, 17,
			"detection: EICAR_Test_File in /tmp/x.com opened by a process that could not be read in time (pid 123, uid 1000 alice): denied, quarantined (record 17)"},
		{"hostile path", base(func(d *Detection) { d.Path = []byte("/tmp/bad\nname\x1b[31m\u202e.com\xff") }), eicar, 18,
			`detection: EICAR_Test_File in "/tmp/bad\nname\x1b[31m\u202e.com\xff" opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, quarantined (record 18)`},
		{"hostile metadata", base(nil), scanner.Match{Rule: "R", Meta: map[string]string{"description": "a\nb"}}, 19,
			`detection: R in /tmp/x.com opened by /usr/bin/cat (pid 123, uid 1000 alice): denied, quarantined (record 19); "a\nb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := detectionMessage(tt.det, &tt.match, tt.id); got != tt.want {
				t.Errorf("detectionMessage:\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

// TestLogMessages logs through the daemon's own log calls and checks that
// each message reads on its own, the fields staying as they were.
func TestLogMessages(t *testing.T) {
	tests := []struct {
		name   string
		log    func(d *Daemon)
		want   string
		fields map[string]any
	}{
		{"protecting filesystem", func(d *Daemon) {
			d.reportMark(fan.Mount{Point: "/mnt", FSType: "tmpfs", Source: "tmpfs"}, nil)
		}, "protecting filesystem /mnt (tmpfs, tmpfs)", map[string]any{"mount": "/mnt", "type": "tmpfs", "source": "tmpfs"}},
		{"cannot protect filesystem", func(d *Daemon) {
			d.reportMark(fan.Mount{Point: "/mnt/we\tird", FSType: "fuse.sshfs"}, errors.New("marking: operation not permitted"))
		}, `cannot protect filesystem "/mnt/we\tird" (fuse.sshfs): marking: operation not permitted`,
			map[string]any{"mount": "/mnt/we\tird", "type": "fuse.sshfs", "error": "marking: operation not permitted"}},
		{"foreign filesystem", func(d *Daemon) {
			d.reportForeignMark(fan.ForeignMount{Mount: fan.Mount{Point: "/data", FSType: "ext4", Source: "/dev/vdb"}, Namespace: 4026532291}, nil)
		}, "protecting a filesystem of another mount namespace: /data (ext4, /dev/vdb, mount namespace 4026532291)",
			map[string]any{"mount": "/data", "type": "ext4", "source": "/dev/vdb", "mount_namespace": uint64(4026532291)}},
		{"stats", func(d *Daemon) {
			d.stats.Events.Add(1200)
			d.stats.Scans.Add(1)
			d.stats.Detections.Add(2)
			d.stats.TimedOut.Add(3)
			d.stats.Decision.Record(1500 * time.Microsecond)
			d.LogStats()
		}, "stats: 1200 events, 1 scan, 2 detections, 3 timed out, 0 overloaded, 0 errors, decision latency p50 1.5ms, p99 1.5ms", nil},
		{"detection deferred", func(d *Daemon) { d.logDeferred("/tmp/a", 4) },
			"detection not recorded now: the record queue is full; the file stays uncached and is detected again at its next open: /tmp/a (4 detections not recorded so far)",
			map[string]any{"path": "/tmp/a", "count": uint64(4)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			d := &Daemon{log: zap.New(core)}
			tt.log(d)
			entries := logs.AllUntimed()
			if len(entries) != 1 {
				t.Fatalf("%d log entries, want 1: %v", len(entries), entries)
			}
			if got := entries[0].Message; got != tt.want {
				t.Errorf("message:\n got: %s\nwant: %s", got, tt.want)
			}
			if tt.fields == nil {
				return
			}
			if diff := cmp.Diff(tt.fields, entries[0].ContextMap()); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlural(t *testing.T) {
	tests := []struct {
		n    int
		noun string
		want string
	}{
		{0, "rule", "0 rules"},
		{1, "rule", "1 rule"},
		{2, "entry", "2 entries"},
		{1, "entry", "1 entry"},
		{-1, "scan", "-1 scans"},
	}
	for _, tt := range tests {
		if got := plural(tt.n, tt.noun); got != tt.want {
			t.Errorf("plural(%d, %q) = %q, want %q", tt.n, tt.noun, got, tt.want)
		}
	}
	if got := plural(uint64(1<<63), "byte"); got != "9223372036854775808 bytes" {
		t.Errorf("plural(1<<63) = %q", got)
	}
}

// TestDetectionJournal logs a detection through a JournalCore to a socket
// of the test's own, where journald's would be, and checks the entry as
// journald would store it: a MESSAGE that reads on its own, MESSAGE_ID,
// and the fields, the new ones (user, unit, severity, description)
// included, the path byte for byte.
func TestDetectionJournal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "journal.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	core, err := systemd.NewJournalCore(systemd.JournalOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	d := &Daemon{log: zap.New(core), owners: map[uint32]string{1000: "alice"}}
	path := "/srv/up\nload/x.php"
	det := &Detection{Path: []byte(path), PID: 4242, Exe: "/usr/sbin/php-fpm8.2", UID: 1000, User: "alice", Unit: "php-fpm8.2.service",
		Action: policy.ActionQuarantine, Verdict: policy.Deny, Answered: policy.Deny, SHA256: strings.Repeat("ab", 32),
		Matches: []scanner.Match{{Rule: "Webshell_X", File: "/etc/fanguard/rules.d/web.yar",
			Meta: map[string]string{"severity": "high", "description": "PHP web shell"}}}}
	d.logDetection(det, 7)

	buf := make([]byte, 1<<16)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := parseJournalEntry(t, buf[:n])
	want := map[string]string{
		"MESSAGE": `detection: Webshell_X (severity high) in "/srv/up\nload/x.php" opened by /usr/sbin/php-fpm8.2 ` +
			`(pid 4242, uid 1000 alice, unit php-fpm8.2.service): denied, quarantined (record 7); PHP web shell`,
		"PRIORITY":             "4",
		"MESSAGE_ID":           systemd.DetectionMessageID,
		"FANGUARD_PATH":        path,
		"FANGUARD_RULE":        "Webshell_X",
		"FANGUARD_RECORD":      "7",
		"FANGUARD_USER":        "alice",
		"FANGUARD_UNIT":        "php-fpm8.2.service",
		"FANGUARD_SEVERITY":    "high",
		"FANGUARD_DESCRIPTION": "PHP web shell",
		"FANGUARD_UID":         "1000",
		"FANGUARD_PID":         "4242",
		"FANGUARD_ANSWERED":    "deny",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["FANGUARD_CONTAINER"]; ok {
		t.Errorf("FANGUARD_CONTAINER set for a detection outside any container: %q", got["FANGUARD_CONTAINER"])
	}
}

// parseJournalEntry decodes one datagram of journald's native protocol.
func parseJournalEntry(t *testing.T, b []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i < 0 {
			t.Fatalf("truncated entry at %q", b)
		}
		name := string(b[:i])
		if b[i] == '=' {
			end := bytes.IndexByte(b[i:], '\n')
			if end < 0 {
				t.Fatalf("field %s without newline", name)
			}
			m[name] = string(b[i+1 : i+end])
			b = b[i+end+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			t.Fatalf("field %s: no length", name)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 {
			t.Fatalf("field %s: %d bytes, %d left", name, n, len(b))
		}
		m[name] = string(b[:n])
		b = b[n+1:]
	}
	return m
}

// TestLogEncoder writes entries through each [log] format and a LogSink,
// and checks what a reader of the log (or a log shipper) gets.
func TestLogEncoder(t *testing.T) {
	when := time.Date(2026, 12, 3, 19, 21, 24, 123456789, time.UTC)
	write := func(t *testing.T, format string) string {
		t.Helper()
		enc, err := NewLogEncoder(format)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		sink := NewLogSink(&out, 16)
		core := zapcore.NewCore(enc, zapcore.AddSync(sink), zapcore.DebugLevel)
		ent := zapcore.Entry{Level: zapcore.WarnLevel, Time: when, Message: "detection: R in \"/tmp/a\\x1b\""}
		if err := core.Write(ent, []zapcore.Field{zap.String("path", "/tmp/a\x1b"), zap.Duration("took", 1500*time.Millisecond),
			zap.Int64("record", 7)}); err != nil {
			t.Fatal(err)
		}
		sink.Close()
		return out.String()
	}
	t.Run("json", func(t *testing.T) {
		line := write(t, "json")
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("not one JSON object: %v\n%s", err, line)
		}
		want := map[string]any{
			"time":     "2026-12-03T19:21:24.123456789Z",
			"priority": float64(4),
			"message":  `detection: R in "/tmp/a\x1b"`,
			"path":     "/tmp/a\x1b",
			"took":     "1.5s",
			"record":   float64(7),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("entry (-want +got):\n%s", diff)
		}
		if strings.ContainsRune(line, 0x1b) {
			t.Errorf("raw escape in the log: %q", line)
		}
	})
	t.Run("console", func(t *testing.T) {
		line := write(t, "console")
		wantPrefix := "2026-12-03T19:21:24.123Z\twarn\tdetection: R in \"/tmp/a\\x1b\"\t{"
		if !strings.HasPrefix(line, wantPrefix) {
			t.Errorf("console line %q does not start with %q", line, wantPrefix)
		}
		if !strings.Contains(line, `"took": "1.5s"`) {
			t.Errorf("console line %q has no duration with its unit", line)
		}
	})
	if _, err := NewLogEncoder("logfmt"); err == nil {
		t.Error(`NewLogEncoder("logfmt") succeeded`)
	}
}
