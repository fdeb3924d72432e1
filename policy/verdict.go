package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// String returns "allow" or "deny", the spelling used in fanguard.toml.
func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// String returns "enforce" or "audit", the spelling used in fanguard.toml.
func (m Mode) String() string {
	switch m {
	case Enforce:
		return "enforce"
	case Audit:
		return "audit"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// String returns "default", "audit", "deny" or "quarantine".
func (a Action) String() string {
	switch a {
	case ActionDefault:
		return "default"
	case ActionAudit:
		return "audit"
	case ActionDeny:
		return "deny"
	case ActionQuarantine:
		return "quarantine"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

const (
	wantVerdict = `"allow" or "deny"`
	wantMode    = `"enforce" or "audit"`
	wantAction  = `"audit", "deny", "quarantine" or "block"`
)

// ParseVerdict parses "allow" or "deny", exactly as written in fanguard.toml
// (lower case).
func ParseVerdict(s string) (Verdict, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	}
	return Allow, fmt.Errorf("verdict %s is not allowed (want %s)", quote(s), wantVerdict)
}

// parseMode parses "enforce" or "audit" (lower case).
func parseMode(s string) (Mode, error) {
	switch s {
	case "enforce":
		return Enforce, nil
	case "audit":
		return Audit, nil
	}
	return Enforce, fmt.Errorf("mode %s is not allowed (want %s)", quote(s), wantMode)
}

// ParseAction parses the "action" metadata of a YARA rule. Case and
// surrounding blanks are ignored. "audit" gives ActionAudit, "deny" and its
// synonym "block" give ActionDeny, "quarantine" gives ActionQuarantine, and
// "" (no metadata) gives ActionDefault. Anything else is an error, and the
// returned Action is then ActionDefault, which Decide treats like a deny:
// a misspelt action never lets a detected file through.
func ParseAction(s string) (Action, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return ActionDefault, nil
	case "audit":
		return ActionAudit, nil
	case "deny", "block":
		return ActionDeny, nil
	case "quarantine":
		return ActionQuarantine, nil
	}
	return ActionDefault, fmt.Errorf("action %s is not allowed (want %s)", quote(s), wantAction)
}

// Decide returns the verdict for an open of a file that matched a rule
// asking for action a: Deny if mode is Enforce and the rule does not ask
// only for an audit, Allow otherwise. ActionDefault, ActionDeny and
// ActionQuarantine all deny in enforce mode; quarantining the file is the
// caller's business.
//
// Pass the rule's action through Effective first, so that a rule without
// one follows quarantine.action.
func Decide(mode Mode, a Action) Verdict {
	if mode == Enforce && a != ActionAudit {
		return Deny
	}
	return Allow
}

// Effective is the action a match leads to: the rule's own (its metadata
// "action"), or the configured quarantine.action when the rule names none.
func Effective(rule, configured Action) Action {
	if rule == ActionDefault {
		return configured
	}
	return rule
}
