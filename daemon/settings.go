package daemon

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fanguard/fanguard/policy"
)

// settings are the keys of the configuration that a reload changes in
// place (policy.Changes' live keys) in the form the daemon reads them. The
// event path loads them once per event or job (Daemon.live), without a
// lock; a reload stores new ones whole. Read-only once stored, so safe for
// concurrent use.
type settings struct {
	mode        policy.Mode
	budget      time.Duration
	onTimeout   policy.Verdict
	onError     policy.Verdict
	onOversize  policy.Verdict
	onOverload  policy.Verdict
	maxFileSize int64
	// excl are exclude_paths (with the quarantine's own files) and
	// exclude_uids.
	excl *policy.Exclusions
	// excludeExe are the exclude_exe paths, looked up by refreshExeIDs.
	excludeExe []string
	action     policy.Action // quarantine.action
	// keepFor is quarantine.max_age, for the retention.
	keepFor time.Duration
	// feedsMaxAge is update.max_age, for the status.
	feedsMaxAge time.Duration
}

// newSettings returns the live settings of cfg.
func newSettings(cfg policy.Config) *settings {
	return &settings{
		mode:        cfg.Mode,
		budget:      cfg.Budget,
		onTimeout:   cfg.OnTimeout,
		onError:     cfg.OnError,
		onOversize:  cfg.OnOversize,
		onOverload:  cfg.OnOverload,
		maxFileSize: cfg.MaxFileSize,
		excl:        policy.NewExclusions(withVault(cfg)),
		excludeExe:  cfg.Protect.ExcludeExe,
		action:      cfg.Quarantine.Action,
		keepFor:     cfg.Quarantine.MaxAge,
		feedsMaxAge: cfg.Update.MaxAge,
	}
}

// live returns the settings in force. Callers on the event path load them
// once per event and keep the pointer for its decisions.
func (d *Daemon) live() *settings { return d.set.Load() }

// storeSettings puts cfg's live settings in force.
func (d *Daemon) storeSettings(cfg policy.Config) { d.set.Store(newSettings(cfg)) }

// ConfigReload is what a reload did with the configuration file.
type ConfigReload struct {
	// Applied are the keys whose new values are in force.
	Applied []policy.Change `json:"applied,omitempty"`
	// RestartNeeded are the keys whose new values take effect only when
	// the daemon starts again; until then the old values stay.
	RestartNeeded []policy.Change `json:"restart_needed,omitempty"`
}

// loadConfig reads the configuration file again, for a reload, and
// returns it with its changes against the configuration in force. Called
// under reloadMu.
func (d *Daemon) loadConfig() (policy.Config, ConfigReload, error) {
	if d.readConfig == nil {
		return d.inForce, ConfigReload{}, nil
	}
	cfg, err := d.readConfig()
	if err != nil {
		return cfg, ConfigReload{}, fmt.Errorf("reading the configuration: %w", err)
	}
	live, restart := policy.Changes(d.inForce, cfg)
	if d.logLevel == nil {
		// Without a level to change, log.level takes a restart.
		for i, c := range live {
			if c.Key == "log.level" {
				live = append(live[:i:i], live[i+1:]...)
				restart = append(restart, c)
				break
			}
		}
	}
	return cfg, ConfigReload{Applied: live, RestartNeeded: restart}, nil
}

// applyConfig puts cfg's live keys in force, with the changes ch that
// loadConfig found. The keys that take a restart keep their values in
// d.inForce, so that the next reload reports them again. Called under
// reloadMu.
func (d *Daemon) applyConfig(cfg policy.Config, ch ConfigReload) {
	if len(ch.Applied) == 0 && len(ch.RestartNeeded) == 0 {
		return
	}
	next := d.inForce
	for _, c := range ch.Applied {
		if err := copyKey(&next, &cfg, c.Key); err != nil {
			d.log.Error("applying a configuration change", zap.Error(err)) // a bug: policy.Changes and copyKey disagree
		}
	}
	old := d.live()
	d.inForce = next
	d.storeSettings(next)
	if d.logLevel != nil {
		if l, err := zapcore.ParseLevel(next.Log.Level); err == nil {
			d.logLevel.SetLevel(l)
		}
	}
	now := d.live()
	if now.mode != old.mode || now.action != old.action {
		// Cached verdicts follow from the mode and the action: a file
		// denied in enforce mode is allowed in audit mode.
		d.invalidateAll("the mode or quarantine.action changed")
	}
	d.refreshExeIDs()
	for _, c := range ch.Applied {
		d.log.Info("configuration changed", zap.String("key", c.Key), zap.String("old", c.Old), zap.String("new", c.New))
	}
	for _, c := range ch.RestartNeeded {
		d.log.Warn("configuration change needs a restart", zap.String("key", c.Key), zap.String("old", c.Old), zap.String("new", c.New))
	}
}

// copyKey copies the value of a live key from src to dst.
func copyKey(dst, src *policy.Config, key string) error {
	switch key {
	case "mode":
		dst.Mode = src.Mode
	case "budget":
		dst.Budget = src.Budget
	case "on_timeout":
		dst.OnTimeout = src.OnTimeout
	case "on_error":
		dst.OnError = src.OnError
	case "on_oversize":
		dst.OnOversize = src.OnOversize
	case "on_overload":
		dst.OnOverload = src.OnOverload
	case "max_file_size":
		dst.MaxFileSize = src.MaxFileSize
	case "protect.exclude_paths":
		dst.Protect.ExcludePaths = src.Protect.ExcludePaths
	case "protect.exclude_exe":
		dst.Protect.ExcludeExe = src.Protect.ExcludeExe
	case "protect.exclude_uids":
		dst.Protect.ExcludeUIDs = src.Protect.ExcludeUIDs
	case "quarantine.action":
		dst.Quarantine.Action = src.Quarantine.Action
	case "quarantine.max_age":
		dst.Quarantine.MaxAge = src.Quarantine.MaxAge
	case "log.level":
		dst.Log.Level = src.Log.Level
	case "update.canary_files":
		dst.Update.CanaryFiles = src.Update.CanaryFiles
	case "update.max_scan_cost":
		dst.Update.MaxScanCost = src.Update.MaxScanCost
	case "update.max_age":
		dst.Update.MaxAge = src.Update.MaxAge
	case "update.timeout":
		dst.Update.Timeout = src.Update.Timeout
	default:
		return errors.New("no live key " + key)
	}
	return nil
}
