package daemon

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StatusFeed is one rule feed in GET /status: the version installed and
// how fresh it is. The daemon learns it from Options.Feeds at each status
// and scrape (the feeds are updated by `fanguard rules update`, another
// process). A plain value.
type StatusFeed struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Version   string    `json:"version"`   // hex SHA-256 of the archive in force; "" when none was ever installed
	Installed time.Time `json:"installed"` // when that version was installed
	Checked   time.Time `json:"checked"`   // the last successful check of the source
	// AgeSeconds is the time since Checked, as of the status; -1 when the
	// feed was never checked successfully.
	AgeSeconds float64  `json:"age_seconds"`
	Rules      int      `json:"rules"`
	HeldBack   []string `json:"held_back"` // "FILE: RULE (matched PATH)" for each rule kept out
	LastError  string   `json:"last_error,omitempty"`
	Stale      bool     `json:"stale"` // not checked for more than update.max_age, or never installed
}

// feeds returns the feeds' status as of now, with ages and staleness.
func (d *Daemon) feeds(now time.Time) []StatusFeed {
	if d.feedStatus == nil {
		return []StatusFeed{}
	}
	fs := d.feedStatus()
	AgeFeeds(fs, now, d.live().feedsMaxAge)
	return fs
}

// AgeFeeds sets the age and staleness of each feed of fs as of now: a feed
// is stale when it was never installed, or not checked successfully for
// more than maxAge (0: never stale once installed).
func AgeFeeds(fs []StatusFeed, now time.Time, maxAge time.Duration) {
	for i := range fs {
		f := &fs[i]
		if f.HeldBack == nil {
			f.HeldBack = []string{}
		}
		f.AgeSeconds = -1
		if !f.Checked.IsZero() {
			f.AgeSeconds = now.Sub(f.Checked).Seconds()
		}
		f.Stale = f.Version == "" || maxAge > 0 && (f.Checked.IsZero() || now.Sub(f.Checked) > maxAge)
	}
}

// feedProblem says why the feeds make the daemon's status unhealthy (not
// the watchdog's Healthy: a stale feed is no reason to restart); "" when
// none does.
func feedProblem(fs []StatusFeed, maxAge time.Duration) string {
	for _, f := range fs {
		switch {
		case !f.Stale:
		case f.Version == "":
			return fmt.Sprintf("rule feed %s was never installed: run fanguard rules update", f.Name)
		case f.Checked.IsZero():
			return fmt.Sprintf("rule feed %s was never checked", f.Name)
		default:
			return fmt.Sprintf("rule feed %s was last updated %v ago, more than update.max_age = %v",
				f.Name, time.Duration(f.AgeSeconds*float64(time.Second)).Round(time.Minute), maxAge)
		}
	}
	return ""
}

// feedMetrics are the per-feed gauges of /metrics.
type feedMetrics struct {
	age, rules, held, stale *prometheus.Desc
}

func newFeedMetrics() feedMetrics {
	g := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("fanguard_"+name, help, []string{"feed"}, nil)
	}
	return feedMetrics{
		age:   g("feed_age_seconds", "Seconds since the rule feed was last checked successfully (absent when never)."),
		rules: g("feed_rules", "Rules the rule feed's installed version holds."),
		held:  g("feed_held_back_rules", "Rules of the rule feed's installed version held back by the update gate."),
		stale: g("feed_stale", "1 when the rule feed was not checked for more than update.max_age, or never installed."),
	}
}

func (m feedMetrics) describe(ch chan<- *prometheus.Desc) {
	ch <- m.age
	ch <- m.rules
	ch <- m.held
	ch <- m.stale
}

func (m feedMetrics) collect(ch chan<- prometheus.Metric, fs []StatusFeed) {
	for _, f := range fs {
		if f.AgeSeconds >= 0 {
			ch <- prometheus.MustNewConstMetric(m.age, prometheus.GaugeValue, f.AgeSeconds, f.Name)
		}
		ch <- prometheus.MustNewConstMetric(m.rules, prometheus.GaugeValue, float64(f.Rules), f.Name)
		ch <- prometheus.MustNewConstMetric(m.held, prometheus.GaugeValue, float64(len(f.HeldBack)), f.Name)
		ch <- prometheus.MustNewConstMetric(m.stale, prometheus.GaugeValue, boolFloat(f.Stale), f.Name)
	}
}
