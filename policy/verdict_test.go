package policy

import (
	"strings"
	"testing"
)

func TestParseVerdict(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Verdict
		wantErr bool
	}{
		{in: "allow", want: Allow},
		{in: "deny", want: Deny},
		{in: "Deny", wantErr: true},
		{in: "", wantErr: true},
		{in: "block", wantErr: true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseVerdict(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), `"allow" or "deny"`) {
					t.Fatalf("ParseVerdict(%q) = %v, %v; want an error naming the allowed values", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseVerdict(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
			}
		})
	}
}

func TestParseAction(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Action
		wantErr bool
	}{
		{in: "", want: ActionDefault},
		{in: "audit", want: ActionAudit},
		{in: "AUDIT", want: ActionAudit},
		{in: " Audit ", want: ActionAudit},
		{in: "deny", want: ActionDeny},
		{in: "block", want: ActionDeny},
		{in: "Block", want: ActionDeny},
		{in: "quarantine", want: ActionQuarantine},
		{in: "Quarantine", want: ActionQuarantine},
		{in: "allow", want: ActionDefault, wantErr: true},
		{in: "log", want: ActionDefault, wantErr: true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAction(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseAction(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), `"audit", "deny", "quarantine" or "block"`) {
				t.Errorf("ParseAction(%q) error %q does not name the allowed values", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseAction(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct {
		got  interface{ String() string }
		want string
	}{
		{Allow, "allow"},
		{Deny, "deny"},
		{Verdict(9), "Verdict(9)"},
		{Enforce, "enforce"},
		{Audit, "audit"},
		{Mode(7), "Mode(7)"},
		{ActionDefault, "default"},
		{ActionAudit, "audit"},
		{ActionDeny, "deny"},
		{ActionQuarantine, "quarantine"},
		{Action(42), "Action(42)"},
	} {
		if s := tt.got.String(); s != tt.want {
			t.Errorf("String() = %q, want %q", s, tt.want)
		}
	}
}

func TestModeRoundTrip(t *testing.T) {
	for _, m := range []Mode{Enforce, Audit} {
		got, err := parseMode(m.String())
		if err != nil || got != m {
			t.Errorf("parseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
}

func TestDecide(t *testing.T) {
	for _, tt := range []struct {
		mode Mode
		a    Action
		want Verdict
	}{
		{Enforce, ActionDefault, Deny},
		{Enforce, ActionAudit, Allow},
		{Enforce, ActionDeny, Deny},
		{Enforce, ActionQuarantine, Deny},
		{Audit, ActionDefault, Allow},
		{Audit, ActionAudit, Allow},
		{Audit, ActionDeny, Allow},
		{Audit, ActionQuarantine, Allow},
	} {
		t.Run(tt.mode.String()+"/"+tt.a.String(), func(t *testing.T) {
			if got := Decide(tt.mode, tt.a); got != tt.want {
				t.Errorf("Decide(%v, %v) = %v, want %v", tt.mode, tt.a, got, tt.want)
			}
		})
	}
}

func TestLocalFSTypes(t *testing.T) {
	a := LocalFSTypes()
	a[0] = "nfs"
	if LocalFSTypes()[0] == "nfs" {
		t.Fatal("LocalFSTypes returns a shared slice")
	}
	for _, fs := range LocalFSTypes() {
		if why := whyNotFSType(fs); why != "" {
			t.Errorf("whyNotFSType(%q) = %q for a local type", fs, why)
		}
	}
	for _, fs := range defaultFSTypes() {
		if why := whyNotFSType(fs); why != "" {
			t.Errorf("default type %q is not allowed: %s", fs, why)
		}
	}
}

func TestEffective(t *testing.T) {
	tests := []struct{ rule, configured, want Action }{
		{ActionDefault, ActionQuarantine, ActionQuarantine},
		{ActionDefault, ActionAudit, ActionAudit},
		{ActionAudit, ActionQuarantine, ActionAudit},
		{ActionDeny, ActionAudit, ActionDeny},
		{ActionQuarantine, ActionDeny, ActionQuarantine},
	}
	for _, tt := range tests {
		if got := Effective(tt.rule, tt.configured); got != tt.want {
			t.Errorf("Effective(%v, %v) = %v, want %v", tt.rule, tt.configured, got, tt.want)
		}
	}
}
