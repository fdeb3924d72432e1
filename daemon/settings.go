package daemon

import (
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
	next := policy.WithLive(d.inForce, cfg)
	if d.logLevel == nil {
		next.Log.Level = d.inForce.Log.Level // a restart applies it (see loadConfig)
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
		d.log.Info("configuration changed: "+printable(c.String()), zap.String("key", c.Key), zap.String("old", c.Old), zap.String("new", c.New))
	}
	for _, c := range ch.RestartNeeded {
		d.log.Warn("configuration change needs a restart: "+printable(c.String()), zap.String("key", c.Key), zap.String("old", c.Old), zap.String("new", c.New))
	}
}
